"""The numbered SQL migrations (`NNNN_description.sql`), shipped as package data.

A package only so that an installed lorabot carries them; `bot.store.database.load_migrations`
reads them through `importlib.resources`.
"""
