"""The PostgreSQL store of each server's own settings: implements the domain's
`GuildSettingsStore` over asyncpg, with the semantics of
`bot.store.sqlite_guild_settings.SqliteGuildSettingsStore`.

Several processes may update one server's settings at once (two admins, two shards' processes):
an update makes the row if it is missing, then locks it (SELECT ... FOR UPDATE) before reading
it, so the updates of one server run one after the other and none loses another's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.jobs.model import GuildSettingChange
from bot.store.database import utcnow
from bot.store.overrides import apply_overrides, as_stored
from bot.store.pg_database import Connection, PostgresDatabase
from bot.store.postgres import utc

#: $1 the server, $2-$4 the changed settings, their old and new values (JSON text; NULL: the
#: default), $5 who changed them, $6 now.
_LOG_CHANGES = (
    "INSERT INTO guild_setting_changes (guild_id, setting, old_value, new_value, changed_by, changed_at)"
    " SELECT $1, c.setting, c.old_value::jsonb, c.new_value::jsonb, $5, $6"
    " FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS c (setting, old_value, new_value, n)"
    " ORDER BY c.n"
)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


class PostgresGuildSettingsStore:
    """Repository of server settings over the same database (and clock) as the job `PostgresStore`."""

    def __init__(self, db: PostgresDatabase, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.now = now

    async def guild_overrides(self, guild_id: int) -> dict[str, Any]:
        """The server's overridden values by setting key ({} for none), kept while the bot is away."""
        settings = await self.db.fetchval("SELECT settings FROM guild_settings WHERE guild_id = $1", guild_id)
        return dict(settings) if settings is not None else {}

    async def update_guild_overrides(
        self, guild_id: int, changes: Mapping[str, Any], *, changed_by: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Set each key of `changes` (None: back to the default) and log the real changes, in ONE
        transaction holding the server's row; returns the overrides before and after. The server
        counts as present again."""
        wanted = as_stored(changes)
        now = utc(self.now())

        async def update(conn: Connection) -> tuple[dict[str, Any], dict[str, Any]]:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, updated_at) VALUES ($1, $2) ON CONFLICT (guild_id) DO NOTHING",
                guild_id,
                now,
            )
            stored = await conn.fetchval("SELECT settings FROM guild_settings WHERE guild_id = $1 FOR UPDATE", guild_id)
            before = dict(stored)
            after, changed = apply_overrides(before, wanted)
            await conn.execute(
                "UPDATE guild_settings SET settings = $2, updated_at = $3, left_at = NULL WHERE guild_id = $1",
                guild_id,
                after,
                now,
            )
            if changed:
                await conn.execute(
                    _LOG_CHANGES,
                    guild_id,
                    [key for key, _, _ in changed],
                    [_json(old) for _, old, _ in changed],
                    [_json(new) for _, _, new in changed],
                    changed_by,
                    now,
                )
            return before, after

        return await self.db.run(update, transaction=True)

    async def guild_setting_changes(self, guild_id: int, *, limit: int = 10) -> list[GuildSettingChange]:
        """The server's latest changes, newest first."""
        rows = await self.db.fetch(
            "SELECT setting, old_value, new_value, changed_by, changed_at FROM guild_setting_changes"
            " WHERE guild_id = $1 ORDER BY id DESC LIMIT $2",
            guild_id,
            limit,
        )
        return [GuildSettingChange(guild_id, str(r[0]), r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def forget_guild(self, guild_id: int) -> bool:
        """Delete the server's settings and their change log; False if it had none."""
        return await self.db.execute("DELETE FROM guild_settings WHERE guild_id = $1", guild_id) == "DELETE 1"

    async def guilds_with_settings(self) -> list[int]:
        """The servers with a settings row that the bot has not left, by id."""
        rows = await self.db.fetch("SELECT guild_id FROM guild_settings WHERE left_at IS NULL ORDER BY guild_id")
        return [int(row[0]) for row in rows]

    async def mark_guilds_left(self, guild_ids: Sequence[int], at: datetime) -> int:
        """Note that the bot left these servers at `at` (those already marked keep their time)."""
        status = await self.db.execute(
            "UPDATE guild_settings SET left_at = $2 WHERE guild_id = ANY($1::bigint[]) AND left_at IS NULL",
            list(guild_ids),
            utc(at),
        )
        return int(status.split()[-1])

    async def mark_guilds_present(self, guild_ids: Sequence[int]) -> int:
        """Note that the bot is in these servers again; how many had been marked as left."""
        status = await self.db.execute(
            "UPDATE guild_settings SET left_at = NULL WHERE guild_id = ANY($1::bigint[]) AND left_at IS NOT NULL",
            list(guild_ids),
        )
        return int(status.split()[-1])

    async def purge_guilds_left_before(self, cutoff: datetime) -> list[int]:
        """Delete the settings (and change logs) of the servers the bot left before `cutoff`."""
        rows = await self.db.run(
            lambda conn: conn.fetch(
                "DELETE FROM guild_settings WHERE left_at < $1 RETURNING guild_id",
                utc(cutoff),
            )
        )
        return sorted(int(row[0]) for row in rows)
