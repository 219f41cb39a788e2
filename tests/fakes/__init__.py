"""Tests of the Discord stand-in (`bot/discord_standin/`), driving the real discord.py client against it."""
