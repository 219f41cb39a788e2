"""`lorabot copy-database`: copy every row from one database to another, SQLite or PostgreSQL,
in either direction, keeping ids.

The target is migrated first and must be empty; the source must be at the same schema version
(a version number means the same schema on both databases). The source is read in one
consistent snapshot, the target written in one transaction (a failure leaves it empty), and
PostgreSQL's id sequences are moved past the copied ids. Then the rows of every table are
counted on both sides, and the jobs and generations per state compared.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast, get_args

import aiosqlite

from bot.store.database import Database, MigrationError, load_migrations
from bot.store.open import SQLITE_PREFIX, database_kind
from bot.store.pg_database import Connection, PostgresDatabase, load_postgres_migrations
from bot.store.sqlite import iso

Kind = Literal["int", "float", "text", "time", "json", "bool", "blob"]


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[tuple[str, Kind], ...]
    #: The primary key, which orders the copy (and an identity column to move past, if any).
    order_by: str
    identity: bool = False

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _kind(text: str) -> Kind:
    if text not in get_args(Kind):
        raise ValueError(f"unknown column kind {text!r}")
    return cast(Kind, text)


def _table(name: str, spec: str, order_by: str = "id", *, identity: bool = False) -> Table:
    """`spec`: the columns as `name:kind` words."""
    columns = tuple((column, _kind(kind)) for column, _, kind in (part.partition(":") for part in spec.split()))
    return Table(name, columns, order_by, identity)


#: Every table of schema version 6 except schema_migrations and state_counts (kept by triggers),
#: in an order that satisfies the foreign keys.
TABLES: tuple[Table, ...] = (
    _table("provider_listings", "id:int listed_at:time", identity=True),
    _table("provider_models", "training_id:text first_listing:int", "training_id"),
    _table(
        "jobs",
        "id:int owner_id:int guild_id:int channel_id:int card_channel_id:int card_message_id:int name:text"
        " state:text provider_status:text training_id:text params:json image_count:int image_urls:json"
        " webhook_secret_hash:text eta_text:text last_error:text created_at:time updated_at:time"
        " progressed_at:time submitted_at:time finished_at:time baseline_listing:int",
        identity=True,
    ),
    _table(
        "job_events",
        "id:int job_id:int status:text source:text payload:text received_at:time applied:bool",
        identity=True,
    ),
    _table(
        "outbox",
        "id:int job_id:int kind:text dedupe_key:text payload:json created_at:time next_attempt_at:time"
        " attempts:int delivered_at:time last_error:text claimed_by:text claimed_until:time",
        identity=True,
    ),
    _table("users", "user_id:int dms_closed_at:time", "user_id"),
    _table("kv", "key:text value:text", "key"),
    _table(
        "generations",
        "id:int job_id:int owner_id:int guild_id:int channel_id:int kind:text state:text user_prompt:text"
        " prompt:text negative_prompt:text strength:float samples:int seed:int width:int height:int"
        " base_model_id:text lora_model:text safety_checker:bool age_restricted:bool request_id:text"
        " attempts:int last_error:text reply_to_message_id:int created_at:time updated_at:time"
        " submitted_at:time finished_at:time next_check_at:time",
        identity=True,
    ),
    _table(
        "generation_images",
        "generation_id:int position:int data:blob content_type:text nsfw:bool url:text",
        "generation_id, position",
    ),
    _table("previews", "job_id:int card_in_dms:bool expires_at:time", "job_id"),
    _table("preview_photos", "job_id:int position:int filename:text data:blob", "job_id, position"),
    _table("guild_settings", "guild_id:int settings:json updated_at:time left_at:time", "guild_id"),
    _table(
        "guild_setting_changes",
        "id:int guild_id:int setting:text old_value:json new_value:json changed_by:int changed_at:time",
        identity=True,
    ),
)
SCHEMA_VERSION = 6
_BATCH = 500
#: The triggers of migration 0004 that count inserted rows into state_counts (on PostgreSQL).
_COUNT_TRIGGERS = (("jobs", "jobs_count_insert"), ("generations", "generations_count_insert"))


class CopyRefused(Exception):
    """The copy was not started (the message says why and what to do); nothing was written."""


Row = tuple[Any, ...]


class _Reader(Protocol):
    def rows(self, table: Table) -> AsyncIterator[list[Row]]: ...
    async def count(self, table: str) -> int: ...
    async def states(self) -> dict[tuple[str, str], int]: ...


class _Writer(Protocol):
    async def write(self, table: Table, rows: list[Row]) -> None: ...
    async def finish(self) -> None: ...


class _Side(Protocol):
    where: str

    async def schema_version(self) -> int: ...
    async def migrate(self) -> None: ...
    async def columns(self, table: str) -> list[str]: ...
    async def count(self, table: str) -> int: ...
    async def states(self) -> dict[tuple[str, str], int]: ...
    def reading(self) -> AbstractAsyncContextManager[_Reader]: ...
    def writing(self) -> AbstractAsyncContextManager[_Writer]: ...
    async def close(self) -> None: ...


# -- values: SQLite stores times as ISO text, JSON as text, flags as 0/1 ---------------------------


def _from_sqlite(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return datetime.fromisoformat(value)
    if kind == "json":
        return json.loads(value)
    if kind == "bool":
        return bool(value)
    return value


def _to_sqlite(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return iso(value)
    if kind == "json":
        return json.dumps(value, sort_keys=True)  # as the SQLite store writes it
    if kind == "bool":
        return int(value)
    return value


_STATES_SQL = "SELECT entity, state, rows FROM state_counts WHERE rows <> 0"


class _Sqlite:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.where = db.path

    async def schema_version(self) -> int:
        return await self.db.schema_version()

    async def migrate(self) -> None:
        await self.db.migrate(load_migrations())

    async def columns(self, table: str) -> list[str]:
        return [str(row[1]) for row in await self.db.fetchall(f"PRAGMA table_info({table})")]

    async def count(self, table: str) -> int:
        row = await self.db.fetchone(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 (a name from TABLES)
        return int(row[0]) if row else 0

    async def states(self) -> dict[tuple[str, str], int]:
        return {(str(e), str(s)): int(n) for e, s, n in await self.db.fetchall(_STATES_SQL)}

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[_Reader]:
        # A write transaction: nothing changes the source while it is copied and counted.
        async with self.db.transaction() as conn:
            yield _SqliteReader(conn)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[_Writer]:
        async with self.db.transaction() as conn:
            yield _SqliteWriter(conn)

    async def close(self) -> None:
        await self.db.close()


class _SqliteReader:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def rows(self, table: Table) -> AsyncIterator[list[Row]]:
        sql = f"SELECT {', '.join(table.names)} FROM {table.name} ORDER BY {table.order_by}"  # noqa: S608
        async with self.conn.execute(sql) as cursor:
            while batch := await cursor.fetchmany(_BATCH):
                yield [
                    tuple(_from_sqlite(kind, v) for (_, kind), v in zip(table.columns, row, strict=True))
                    for row in batch
                ]

    async def count(self, table: str) -> int:
        async with self.conn.execute(f"SELECT COUNT(*) FROM {table}") as cursor:  # noqa: S608
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def states(self) -> dict[tuple[str, str], int]:
        async with self.conn.execute(_STATES_SQL) as cursor:
            return {(str(e), str(s)): int(n) for e, s, n in await cursor.fetchall()}


class _SqliteWriter:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def write(self, table: Table, rows: list[Row]) -> None:
        marks = ", ".join("?" for _ in table.columns)
        await self.conn.executemany(
            f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks})",  # noqa: S608
            [tuple(_to_sqlite(kind, v) for (_, kind), v in zip(table.columns, row, strict=True)) for row in rows],
        )

    async def finish(self) -> None:
        """Nothing to do: SQLite's next id is always the largest one plus one."""


class _Postgres:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self.where = db.path

    async def schema_version(self) -> int:
        return await self.db.schema_version()

    async def migrate(self) -> None:
        await self.db.migrate(load_postgres_migrations())

    async def columns(self, table: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = $1 ORDER BY ordinal_position",
            table,
        )
        return [str(row[0]) for row in rows]

    async def count(self, table: str) -> int:
        return int(await self.db.fetchval(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608 (a name from TABLES)

    async def states(self) -> dict[tuple[str, str], int]:
        return {(str(e), str(s)): int(n) for e, s, n in await self.db.fetch(_STATES_SQL)}

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[_Reader]:
        # One snapshot for every table and count: a consistent copy even if the bot still writes.
        async with self.db.transaction(isolation="repeatable_read", readonly=True) as conn:
            yield _PostgresReader(conn)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[_Writer]:
        async with self.db.transaction() as conn:
            # Fired once per copied row, the count triggers would update the same few state_counts
            # rows for every row of this one transaction, each update walking the chain of that
            # row's earlier versions: quadratic (80,000 jobs: 149 s; a million: hours). They are off
            # for the copy and the counts written once in finish(); a failed copy rolls this back too.
            for counted, trigger in _COUNT_TRIGGERS:
                await conn.execute(f"ALTER TABLE {counted} DISABLE TRIGGER {trigger}")
            yield _PostgresWriter(conn)

    async def close(self) -> None:
        await self.db.close()


class _PostgresReader:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def rows(self, table: Table) -> AsyncIterator[list[Row]]:
        sql = f"SELECT {', '.join(table.names)} FROM {table.name} ORDER BY {table.order_by}"  # noqa: S608
        batch: list[Row] = []
        async for record in self.conn.cursor(sql, prefetch=_BATCH):
            batch.append(tuple(record))
            if len(batch) == _BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def count(self, table: str) -> int:
        return int(await self.conn.fetchval(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608

    async def states(self) -> dict[tuple[str, str], int]:
        return {(str(e), str(s)): int(n) for e, s, n in await self.conn.fetch(_STATES_SQL)}


class _PostgresWriter:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def write(self, table: Table, rows: list[Row]) -> None:
        await self.conn.copy_records_to_table(table.name, records=rows, columns=table.names)

    async def finish(self) -> None:
        """Count the copied rows per state, turn the count triggers back on, and move each id
        sequence past the copied ids, so the next row gets a new one."""
        for counted, trigger in _COUNT_TRIGGERS:
            await self.conn.execute(f"DELETE FROM state_counts WHERE entity = '{counted}'")  # noqa: S608
            await self.conn.execute(
                f"INSERT INTO state_counts (entity, state, rows) SELECT '{counted}', state, COUNT(*)"  # noqa: S608
                f" FROM {counted} GROUP BY state"
            )
            await self.conn.execute(f"ALTER TABLE {counted} ENABLE TRIGGER {trigger}")
        for table in TABLES:
            if table.identity:
                await self.conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), COALESCE(MAX(id), 0) + 1, false)"  # noqa: S608
                    f" FROM {table.name}"
                )


async def _open(url: str) -> _Side:
    if database_kind(url) == "sqlite":
        return _Sqlite(await Database.open(url.removeprefix(SQLITE_PREFIX)))
    return _Postgres(await PostgresDatabase.open(url))


# -- the copy ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopyReport:
    source: str
    target: str
    #: (table, rows in the source, rows in the target)
    counts: tuple[tuple[str, int, int], ...]
    #: Jobs and generations per state, as the source's and the target's triggers keep them.
    states_source: dict[tuple[str, str], int]
    states_target: dict[tuple[str, str], int]

    @property
    def ok(self) -> bool:
        return all(source == target for _, source, target in self.counts) and self.states_source == self.states_target

    def table(self) -> str:
        """The counts, one line per table, and a verdict."""
        width = max(len(name) for name, _, _ in self.counts)
        lines = [f"{'table':<{width}}  {'source':>9}  {'target':>9}"]
        for name, source, target in self.counts:
            mark = "" if source == target else "  MISMATCH"
            lines.append(f"{name:<{width}}  {source:>9}  {target:>9}{mark}")
        same = self.states_source == self.states_target
        lines.append(f"{'by state':<{width}}  {'':>9}  {'same' if same else 'DIFFERENT':>9}")
        verdict = "copied" if self.ok else "the copy does NOT match the source"
        lines.append(f"{verdict}: {self.source} -> {self.target}")
        return "\n".join(lines)


async def copy_database(source_url: str, target_url: str) -> CopyReport:
    """Copy every row from `source_url` to `target_url` (see the module's docstring).

    Raises CopyRefused (nothing written), DatabaseUnavailable (a ConfigError) or MigrationError (a
    database newer than this release, or a target that cannot be migrated).
    """
    source = await _open(source_url)
    try:
        target = await _open(target_url)
        try:
            return await _copy(source, target)
        finally:
            await target.close()
    finally:
        await source.close()


async def _copy(source: _Side, target: _Side) -> CopyReport:
    version = await source.schema_version()
    if version > SCHEMA_VERSION:
        raise MigrationError(
            f"the source {source.where} is at schema version {version}, newer than this release knows "
            f"({SCHEMA_VERSION}); upgrade lorabot first"
        )
    if version < SCHEMA_VERSION:
        raise CopyRefused(
            f"the source {source.where} is at schema version {version}, this release copies version "
            f"{SCHEMA_VERSION}; run `lorabot migrate --database-url <source URL>` first"
        )
    await target.migrate()
    await _check_columns(source, target)
    filled = {table.name: n for table in TABLES if (n := await target.count(table.name))}
    if filled:
        listed = ", ".join(f"{name}: {n}" for name, n in filled.items())
        raise CopyRefused(
            f"the target {target.where} already holds rows ({listed}); copy-database only fills an empty database"
        )
    async with source.reading() as reader:
        async with target.writing() as writer:
            for table in TABLES:
                async for batch in reader.rows(table):
                    await writer.write(table, batch)
            await writer.finish()
        counted = [(table.name, await reader.count(table.name)) for table in TABLES]
        states_source = await reader.states()
    counts = tuple([(name, n, await target.count(name)) for name, n in counted])
    return CopyReport(source.where, target.where, counts, states_source, await target.states())


async def _check_columns(*sides: _Side) -> None:
    """Refuse a schema this module does not know column by column (a row must never lose a value)."""
    for side in sides:
        for table in TABLES:
            found = await side.columns(table.name)
            if sorted(found) != sorted(table.names):
                raise CopyRefused(
                    f"{side.where}: table {table.name} has the columns {found}, copy-database knows "
                    f"{table.names}; this release cannot copy it"
                )
