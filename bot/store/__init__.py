"""Store adapters: SQLite (`SqliteStore`, `SqliteGenerationStore`, `SqliteGuildSettingsStore`) over
one `Database`, and PostgreSQL (`bot.store.postgres`, `bot.store.postgres_generations`,
`bot.store.postgres_guild_settings`) over one `PostgresDatabase`.

They implement the domain's `JobStore`, `GenerationStore` and `GuildSettingsStore` protocols and
return its records; `bot.store.open.open_stores` opens the set DATABASE_URL names. The PostgreSQL
modules are not imported here, so SQLite-only code never loads asyncpg.
"""

from bot.store.database import Database, DatabaseUnavailable, MigrationError, load_migrations
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore
from bot.store.sqlite_guild_settings import SqliteGuildSettingsStore

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "MigrationError",
    "SqliteGenerationStore",
    "SqliteGuildSettingsStore",
    "SqliteStore",
    "load_migrations",
]
