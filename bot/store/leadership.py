"""Which process leads: always this one (SQLite), or the holder of a PostgreSQL advisory lock.

`AdvisoryLockLeadership` keeps ONE dedicated connection (never a pooled one: a pool would hand the
session, and with it the lock, to other work) and takes a session-level advisory lock on it. When
the process dies its session ends, the server frees the lock, and another process takes it at its
next `try_acquire`. Every call has a timeout: a hung server makes this process stop leading, it
never hangs the bot.

The lock key is the first 8 bytes of SHA-256 of ``"<name>/<current_schema()>"`` (name
``lorabot.leader`` unless given), read as a signed big-endian 64-bit integer. Advisory locks are
per database already; the schema in the key lets two bots in different schemas of one database
lead independently. The same key computed in SQL, to find the leader's pid in ``pg_locks``::

    SELECT ('x' || left(encode(sha256(convert_to('lorabot.leader/' || current_schema(), 'UTF8')),
            'hex'), 16))::bit(64)::bigint;

``pg_locks`` shows a bigint key split in two: ``classid`` the high 32 bits, ``objid`` the low 32
bits, ``objsubid = 1``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import asyncpg

from bot.store.pg_database import redact_url, url_passwords

log = logging.getLogger(__name__)

LOCK_NAME = "lorabot.leader"
DEFAULT_TIMEOUT_SECONDS = 5.0
#: The server probes an idle leader's connection, so a leader whose machine vanished (no FIN ever
#: comes) loses the lock in about idle + interval * count = 25 s instead of the kernel's 2 hours.
KEEPALIVE_SETTINGS: Mapping[str, str] = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


class NoSchema(Exception):
    """The connection's search_path names no existing schema, so there is no key to lock."""


#: What a lost server, a dead connection or a refused login raise; each only means "not leading now".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    NoSchema,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

_STILL_HELD = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = $1 AND objid = $2 AND objsubid = 1
)
"""


def lock_key(schema: str, name: str = LOCK_NAME) -> int:
    """The advisory lock key for `name` in `schema` (the formula is in the module's docstring)."""
    digest = hashlib.sha256(f"{name}/{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_key_halves(key: int) -> tuple[int, int]:
    """`key` as ``pg_locks`` shows it: (classid, objid), the high and the low 32 bits."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


class SingleProcessLeadership:
    """SQLite: one process owns the database, so it always leads."""

    @property
    def held(self) -> bool:
        return True

    async def try_acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class AdvisoryLockLeadership:
    """Leads while holding a session advisory lock on a dedicated PostgreSQL connection."""

    def __init__(
        self,
        dsn: str,
        *,
        name: str = LOCK_NAME,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self._dsn = dsn
        self.name = name
        self.timeout = timeout
        #: Settings for the session, e.g. a search_path naming the schema the bot's tables live in.
        self.server_settings = {**KEEPALIVE_SETTINGS, **(server_settings or {})}
        self.where = redact_url(dsn)
        self._secrets = sorted(set(url_passwords(dsn)), key=len, reverse=True)
        self._conn: Any = None  # asyncpg.Connection; asyncpg ships no type information
        self._held = False
        #: The lock key of the current connection's schema (None until the first connection).
        self.key: int | None = None
        self._failing = False

    @property
    def held(self) -> bool:
        """True while the lock is held on a connection that has not been seen to close."""
        return self._held and self._conn is not None and not self._conn.is_closed()

    async def try_acquire(self) -> bool:
        """Keep or take the lock; reconnect if the connection died. Never raises for a lost server."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._acquire()
        except CONNECTION_ERRORS as error:
            self._held = False
            self._drop_connection()
            self._report_failure(error)
            return False
        if self._failing:
            self._failing = False
            log.info("leadership: PostgreSQL at %s answers again", self.where)
        return self._held

    async def _acquire(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            self._held = False
            self._drop_connection()
            conn = self._conn = await self._connect()
        assert self.key is not None  # set by _connect
        if self._held:
            classid, objid = lock_key_halves(self.key)
            if await conn.fetchval(_STILL_HELD, classid, objid):
                return
            log.warning("leadership: the advisory lock vanished from this process's session")
            self._held = False
        self._held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))

    async def _connect(self) -> Any:
        conn = await asyncpg.connect(self._dsn, timeout=self.timeout, server_settings=dict(self.server_settings))
        try:
            schema = await conn.fetchval("SELECT current_schema()")
            if schema is None:
                raise NoSchema("the search_path names no existing schema")
            self.key = lock_key(str(schema), self.name)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # closing politely could wait on a hung server

    def _detail(self, error: BaseException) -> str:
        """The error's type and message, with the DSN's password (should a message quote it) scrubbed."""
        message = str(error)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return f"{type(error).__name__}: {message}" if message else type(error).__name__

    def _report_failure(self, error: BaseException) -> None:
        # Once per outage: a server down for an hour must not write a warning every interval.
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        log.log(
            level,
            "leadership: PostgreSQL at %s unusable (%s); not leading until it is",
            self.where,
            self._detail(error),
        )

    async def release(self) -> None:
        """Unlock and close, so another process can lead at its next try without waiting for a timeout."""
        conn, self._conn = self._conn, None
        held, self._held = self._held, False
        if conn is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                if held and not conn.is_closed():
                    await conn.fetchval("SELECT pg_advisory_unlock($1)", self.key)
                await conn.close()
        except CONNECTION_ERRORS as error:
            log.warning(
                "leadership: could not unlock cleanly at %s (%s); the server frees the lock when the session ends",
                self.where,
                self._detail(error),
            )
        finally:
            if not conn.is_closed():
                conn.terminate()
