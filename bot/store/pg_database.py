"""The PostgreSQL connection owner: an asyncpg pool with timeouts, and the numbered migrations.

Every call that leaves the process has a time limit: connecting (`connect_timeout`), taking a
connection from the pool (`acquire_timeout`) and every statement (`command_timeout`, asyncpg's
per-connection default). Several bot processes may share the database, so migrations take an
advisory lock and the stores never rely on process-local state.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import unquote

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.store.database import DatabaseUnavailable, Migration, MigrationError, load_migrations, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The PostgreSQL migrations: package data of `migrations.postgres`, numbered like SQLite's.
MIGRATIONS_PACKAGE = "migrations.postgres"
#: A deadlock or a serialization failure aborts a transaction that would succeed if run again.
_RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 5
_USERINFO_PASSWORD = re.compile(r"(://[^/?#@:]*):([^/?#@]*)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
Isolation: TypeAlias = Literal["serializable", "repeatable_read", "read_uncommitted", "read_committed"]
#: A pooled connection, as the stores use it.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


def load_postgres_migrations() -> list[Migration]:
    """The PostgreSQL migrations, read like SQLite's (`load_migrations`) from their own package."""
    try:
        directory = importlib.resources.files(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError:
        raise MigrationError(
            f"the `{MIGRATIONS_PACKAGE}` package is not installed next to `bot`; reinstall lorabot"
        ) from None
    return load_migrations(directory)


def redact_url(url: str) -> str:
    """The URL without its password (in the authority or as a `password=` parameter), for
    messages and logs. Never raises, whatever the URL."""
    url = _USERINFO_PASSWORD.sub(r"\1:***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


def url_passwords(url: str) -> list[str]:
    """The passwords in a URL, as written and percent-decoded (for the log redactor)."""
    found = [match[2] for match in _USERINFO_PASSWORD.finditer(url)]
    found += [match[2] for match in _QUERY_PASSWORD.finditer(url)]
    return [form for password in found if password for form in {password, unquote(password)}]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class PostgresUnavailable(DatabaseUnavailable):
    """The server cannot be reached or refuses us; the message names DATABASE_URL, never the password."""

    def __init__(self, url: str, reason: str) -> None:
        for password in url_passwords(url):
            reason = reason.replace(password, "***")
        self.path = redact_url(url)
        self.reason = reason
        # Not DatabaseUnavailable.__init__: its message is about a file.
        Exception.__init__(
            self,
            f"DATABASE_URL: cannot use the PostgreSQL database {self.path} ({reason}); make sure the server "
            "runs and accepts this user, and that the database exists, or set DATABASE_URL to another database",
        )


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    # jsonb columns read and write Python values (dicts, lists), dumped with sorted keys. Binary
    # format (a version byte, then the text) so COPY, which is binary only, can write them too.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_jsonb_encode, decoder=_jsonb_decode, format="binary"
    )


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + json.dumps(value, sort_keys=True).encode()


def _jsonb_decode(data: bytes) -> Any:
    if data[:1] != b"\x01":
        raise ValueError(f"unknown jsonb format version {data[:1]!r}")
    return json.loads(data[1:])


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Released connections are not reset (asyncpg's default costs a round trip per use): the
    stores leave no session state behind (no SET, LISTEN, cursor or session advisory lock), and
    asyncpg still rolls back a transaction left open."""


class PostgresDatabase:
    """An open pool of connections to one PostgreSQL database. Use `PostgresDatabase.open()`."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], url: str, *, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        #: The URL without its password, for messages and logs.
        self.path = redact_url(url)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        acquire_timeout: float = 30.0,
    ) -> PostgresDatabase:
        """Connect to the database at `url`; PostgresUnavailable (a ConfigError) if that fails."""
        if not is_postgres_url(url):
            raise PostgresUnavailable(url, "the URL must start with postgresql:// or postgres://")
        try:
            async with asyncio.timeout(connect_timeout * 2):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    timeout=connect_timeout,
                    command_timeout=command_timeout,
                    init=_init_connection,
                    reset=_keep_session,
                    server_settings={"application_name": "lorabot"},
                )
        except TimeoutError:
            raise PostgresUnavailable(url, f"no answer within {connect_timeout:g} s") from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise PostgresUnavailable(url, reason or type(error).__name__) from None
        return cls(pool, url, acquire_timeout=acquire_timeout)

    async def close(self, seconds: float = 10.0) -> None:
        """Close every connection, waiting at most `seconds` for those in use."""
        try:
            async with asyncio.timeout(seconds):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection from the pool (waits at most `acquire_timeout` for one)."""
        async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation | None = None, readonly: bool = False
    ) -> AsyncIterator[Connection]:
        """One transaction on one pooled connection (committed on exit, rolled back on error)."""
        async with self.connection() as conn, conn.transaction(isolation=isolation, readonly=readonly):
            yield conn

    async def run(self, work: Callable[[Connection], Awaitable[T]], *, transaction: bool = False) -> T:
        """`work(conn)` on one pooled connection (in one transaction if asked), run again when
        PostgreSQL aborted it for a deadlock or a serialization failure: `work` must be safe to repeat."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                if transaction:
                    async with self.transaction() as conn:
                        return await work(conn)
                async with self.connection() as conn:
                    return await work(conn)
            except _RETRIED as error:
                if attempt == _ATTEMPTS:
                    raise
                log.info("retrying after %s (attempt %d)", type(error).__name__, attempt)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """One statement in its own transaction; returns its status (e.g. ``UPDATE 3``)."""
        return await self.run(lambda conn: conn.execute(sql, *args))

    async def ping(self, seconds: float = 5.0) -> bool:
        """True when the database answers a trivial query within `seconds` (for /healthz)."""
        try:
            async with asyncio.timeout(seconds):
                return bool(await self.fetchval("SELECT 1") == 1)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    # -- migrations ---------------------------------------------------------------------------

    async def schema_version(self) -> int:
        """The newest migration applied; 0 for an empty database (reading writes nothing)."""
        async with self.connection() as conn:
            return await _schema_version(conn)

    async def migrate(self, migrations: Iterable[Migration] | None = None) -> list[Migration]:
        """Apply the pending migrations, each in one transaction; return those applied.

        Each step holds a transaction-scoped advisory lock (per schema), so processes starting
        together apply each migration once. A database newer than this code is refused.
        """
        known = list(migrations) if migrations is not None else load_postgres_migrations()
        newest = known[-1].version if known else 0
        applied: list[Migration] = []
        while True:
            async with self.transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':lorabot-migrate'))")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
                )
                current = await _schema_version(conn)
                if current > newest:
                    raise MigrationError(
                        f"the database {self.path} is at schema version {current}, newer than this code "
                        f"knows ({newest}); upgrade the bot or point DATABASE_URL at another database"
                    )
                migration = next((m for m in known if m.version > current), None)
                if migration is None:
                    return applied
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as error:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed on {self.path}: {error}"
                    ) from error
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    utcnow(),
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration)


async def _schema_version(conn: Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))
