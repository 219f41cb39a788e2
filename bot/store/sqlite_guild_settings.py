"""The SQLite store of each server's own settings: the overridden values (a JSON object), the log
of their changes, and when the bot left the server.

An update reads, changes and writes the row and its change log in one transaction of the
database's serialized write path, so two updates of one server never lose each other's keys.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.jobs.model import GuildSettingChange
from bot.store.database import Database, utcnow
from bot.store.overrides import apply_overrides, as_stored
from bot.store.sqlite import iso


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SqliteGuildSettingsStore:
    """Repository of server settings over the same database (and clock) as the job `SqliteStore`."""

    def __init__(self, db: Database, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.now = now

    async def guild_overrides(self, guild_id: int) -> dict[str, Any]:
        """The server's overridden values by setting key ({} for none), kept while the bot is away."""
        row = await self.db.fetchone("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return dict(json.loads(row[0])) if row else {}

    async def update_guild_overrides(
        self, guild_id: int, changes: Mapping[str, Any], *, changed_by: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Set each key of `changes` (None: back to the default) and log the real changes, in ONE
        transaction; returns the overrides before and after. The server counts as present again."""
        wanted = as_stored(changes)
        now = iso(self.now())

        def update(conn: sqlite3.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
            row = conn.execute("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,)).fetchone()
            before: dict[str, Any] = json.loads(row[0]) if row else {}
            after, changed = apply_overrides(before, wanted)
            conn.execute(
                "INSERT INTO guild_settings (guild_id, settings, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings,"
                " updated_at = excluded.updated_at, left_at = NULL",
                (guild_id, json.dumps(after, sort_keys=True), now),
            )
            conn.executemany(
                "INSERT INTO guild_setting_changes (guild_id, setting, old_value, new_value, changed_by, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(guild_id, key, _json(old), _json(new), changed_by, now) for key, old, new in changed],
            )
            return before, after

        return await self.db.run_transaction(update)

    async def guild_setting_changes(self, guild_id: int, *, limit: int = 10) -> list[GuildSettingChange]:
        """The server's latest changes, newest first."""
        rows = await self.db.fetchall(
            "SELECT setting, old_value, new_value, changed_by, changed_at FROM guild_setting_changes"
            " WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [
            GuildSettingChange(
                guild_id, str(row[0]), _value(row[1]), _value(row[2]), int(row[3]), datetime.fromisoformat(row[4])
            )
            for row in rows
        ]

    async def forget_guild(self, guild_id: int) -> bool:
        """Delete the server's settings and their change log; False if it had none."""

        def forget(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM guild_settings WHERE guild_id = ?", (guild_id,)).rowcount > 0

        return await self.db.run_transaction(forget)

    async def guilds_with_settings(self) -> list[int]:
        """The servers with a settings row that the bot has not left, by id."""
        rows = await self.db.fetchall("SELECT guild_id FROM guild_settings WHERE left_at IS NULL ORDER BY guild_id")
        return [int(row[0]) for row in rows]

    async def mark_guilds_left(self, guild_ids: Sequence[int], at: datetime) -> int:
        """Note that the bot left these servers at `at` (those already marked keep their time)."""
        left = iso(at)

        def mark(conn: sqlite3.Connection) -> int:
            cursor = conn.executemany(
                "UPDATE guild_settings SET left_at = ? WHERE guild_id = ? AND left_at IS NULL",
                [(left, guild_id) for guild_id in guild_ids],
            )
            return cursor.rowcount

        return await self.db.run_transaction(mark) if guild_ids else 0

    async def mark_guilds_present(self, guild_ids: Sequence[int]) -> int:
        """Note that the bot is in these servers again; how many had been marked as left."""

        def mark(conn: sqlite3.Connection) -> int:
            cursor = conn.executemany(
                "UPDATE guild_settings SET left_at = NULL WHERE guild_id = ? AND left_at IS NOT NULL",
                [(guild_id,) for guild_id in guild_ids],
            )
            return cursor.rowcount

        return await self.db.run_transaction(mark) if guild_ids else 0

    async def purge_guilds_left_before(self, cutoff: datetime) -> list[int]:
        """Delete the settings (and change logs) of the servers the bot left before `cutoff`."""
        before = iso(cutoff)

        def purge(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute("DELETE FROM guild_settings WHERE left_at < ? RETURNING guild_id", (before,)).fetchall()
            return sorted(int(row[0]) for row in rows)

        return await self.db.run_transaction(purge)
