"""The SQLite connection owner: pragmas, serialized write transactions, numbered migrations.

One aiosqlite connection serves the whole process. Writes go through `transaction()`, which
holds an asyncio lock for the duration, so two coroutines never interleave statements of
different transactions on the shared connection; reads take the same lock, so they see only
committed data.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.config import ConfigError, migrations_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The database cannot be brought to the schema this code expects."""


class DatabaseUnavailable(ConfigError):
    """The database file cannot be opened for writing; the message names DATABASE_URL and the fix."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = path if path == ":memory:" else str(Path(path).absolute())
        super().__init__(
            f"DATABASE_URL: cannot open the database {where} for writing ({reason}); make sure its "
            "directory exists and this user may write there, or set DATABASE_URL to another path"
        )


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The numbered `NNNN_name.sql` files, in order; gaps and duplicates are refused, and so is
    finding none (an installation without its migrations must not look like an up-to-date one).

    By default they are read through `importlib.resources` from the `migrations` package, so
    they are found in an installed copy as well as in a source checkout.
    """
    if directory is None:
        try:
            directory = migrations_dir()
        except ModuleNotFoundError:
            raise MigrationError("the `migrations` package is not installed next to `bot`; reinstall lorabot") from None
    try:
        files = [item for item in directory.iterdir() if item.name.endswith(".sql")]
    except OSError as error:
        raise MigrationError(f"cannot list the migrations in {directory}: {error}") from None
    migrations = []
    for path in sorted(files, key=lambda item: item.name):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_description.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    if not migrations:
        raise MigrationError(f"no migration files (NNNN_name.sql) in {directory}; the installation is incomplete")
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing (found {migration.version:04d})")
    return migrations


def split_statements(script: str) -> list[str]:
    """Split a script into statements (executescript would COMMIT our transaction)."""
    statements, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise MigrationError("migration ends with an incomplete statement")
    return statements


def utcnow() -> datetime:
    return datetime.now(UTC)


def _check_writable(path: str, busy_timeout_ms: int) -> None:
    """Create the directory and the file if needed, and take (and release) the write lock once."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except (FileExistsError, NotADirectoryError) as error:
        raise DatabaseUnavailable(path, f"{error.filename} is not a directory") from None
    except (OSError, sqlite3.Error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise DatabaseUnavailable(path, reason) from None


class Database:
    """An open SQLite database. Use `Database.open()`; close with `close()`."""

    def __init__(self, connection: aiosqlite.Connection, path: str) -> None:
        self._conn = connection
        self._write_lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def open(cls, path: str, *, busy_timeout_ms: int = 5000) -> Database:
        """Open (creating it if needed) the database at `path`; DatabaseUnavailable if it cannot be
        written, found before aiosqlite's thread starts (a failure there leaves that thread behind)."""
        if path != ":memory:":
            await asyncio.to_thread(_check_writable, path, busy_timeout_ms)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only an OS crash or
        # power loss can lose the last transactions, and fsync per webhook costs milliseconds.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        return cls(conn, path)

    async def close(self) -> None:
        async with self._write_lock:
            await self._conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One serialized write transaction (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error)."""
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def run_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` as one write transaction, entirely inside the database thread.

        A transaction of several statements costs one hand-off between the event loop and
        aiosqlite's thread instead of one per statement (the hot path of every webhook). `work`
        must be quick, synchronous and pure apart from its SQL. This uses aiosqlite's internal
        `_execute` queue, which every public method goes through; the store's tests exercise it.
        """

        def transaction() -> T:
            connection = self._conn._conn  # the sqlite3.Connection owned by aiosqlite's thread
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

        async with self._write_lock:
            return await self._conn._execute(transaction)  # type: ignore[no-untyped-call,no-any-return]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        # Reads wait for an open write transaction on the shared connection, so they never see
        # changes that may still be rolled back. One hand-off to the database thread per read.
        async with self._write_lock:
            return list(await self._conn.execute_fetchall(sql, params))

    async def ping(self) -> bool:
        """True when the database answers a trivial query (for /healthz)."""
        try:  # no lock: liveness must not queue behind a burst of write transactions
            async with self._conn.execute("SELECT 1") as cursor:
                await cursor.fetchone()
        except (sqlite3.Error, ValueError):
            return False
        return True

    # -- migrations ---------------------------------------------------------------------------

    async def schema_version(self) -> int:
        await self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(row[0]) if row else 0

    async def migrate(self, migrations: Iterable[Migration] | None = None) -> list[Migration]:
        """Apply the pending migrations, each in one transaction; return those applied.

        Running it again applies nothing. A database whose schema is newer than the newest
        migration this code knows is refused, so an old release never writes to a new schema.
        """
        known = list(migrations) if migrations is not None else load_migrations()
        current = await self.schema_version()
        newest = known[-1].version if known else 0
        if current > newest:
            raise MigrationError(
                f"the database {self.path} is at schema version {current}, newer than this code "
                f"knows ({newest}); upgrade the bot or point DATABASE_URL at another database"
            )
        applied = []
        for migration in known:
            if migration.version <= current:
                continue
            async with self.transaction() as conn:
                for statement in split_statements(migration.sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, utcnow().isoformat()),
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration)
        return applied
