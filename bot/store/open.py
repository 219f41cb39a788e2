"""Open the stores DATABASE_URL names: SQLite (`sqlite:///path`, the default) or PostgreSQL
(`postgresql://...` or `postgres://...`). The rest of the bot sees only the domain's protocols."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from bot.jobs.ports import GenerationStore, GuildSettingsStore, JobStore
from bot.store.database import Database, DatabaseUnavailable, Migration, utcnow
from bot.store.pg_database import PostgresDatabase, is_postgres_url, redact_url
from bot.store.postgres import PostgresStore
from bot.store.postgres_generations import PostgresGenerationStore
from bot.store.postgres_guild_settings import PostgresGuildSettingsStore
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore
from bot.store.sqlite_guild_settings import SqliteGuildSettingsStore

SQLITE_PREFIX = "sqlite:///"
DatabaseKind = Literal["sqlite", "postgresql"]


class StoreDatabase(Protocol):
    """What the application does with the database itself, whichever it is."""

    #: Where it is, for messages and logs: the SQLite path, or the PostgreSQL URL without password.
    path: str

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    async def migrate(self, migrations: Iterable[Migration] | None = None) -> list[Migration]: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """The job, generation and server-settings stores over one open database, sharing one clock."""

    jobs: JobStore
    generations: GenerationStore
    guild_settings: GuildSettingsStore
    database: StoreDatabase
    kind: DatabaseKind

    async def close(self) -> None:
        await self.database.close()


class UnknownDatabaseUrl(DatabaseUnavailable):
    """DATABASE_URL names neither SQLite nor PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.path = redact_url(url)
        self.reason = "unknown scheme"
        # Not DatabaseUnavailable.__init__: its message is about a file.
        Exception.__init__(
            self,
            "DATABASE_URL: must look like sqlite:///path/to/file.db or postgresql://user@host/database, "
            f"got {self.path!r}",
        )


def database_kind(database_url: str) -> DatabaseKind:
    """Which database a DATABASE_URL names; UnknownDatabaseUrl for neither."""
    if database_url.startswith(SQLITE_PREFIX) and database_url != SQLITE_PREFIX:
        return "sqlite"
    if is_postgres_url(database_url):
        return "postgresql"
    raise UnknownDatabaseUrl(database_url)


async def open_stores(database_url: str, *, now: Callable[[], datetime] = utcnow, migrate: bool = False) -> Stores:
    """Open the database `database_url` names and its stores; with `migrate`, apply the pending
    migrations first (closing the database again if that fails).

    Raises DatabaseUnavailable (a ConfigError naming DATABASE_URL) when the database cannot be
    opened, and MigrationError when its schema cannot be brought up to date.
    """
    kind = database_kind(database_url)
    stores: Stores
    if kind == "sqlite":
        db = await Database.open(database_url.removeprefix(SQLITE_PREFIX))
        stores = Stores(
            SqliteStore(db, now=now),
            SqliteGenerationStore(db, now=now),
            SqliteGuildSettingsStore(db, now=now),
            db,
            kind,
        )
    else:
        pg = await PostgresDatabase.open(database_url)
        stores = Stores(
            PostgresStore(pg, now=now),
            PostgresGenerationStore(pg, now=now),
            PostgresGuildSettingsStore(pg, now=now),
            pg,
            kind,
        )
    if migrate:
        try:
            await stores.database.migrate()
        except BaseException:
            await stores.close()
            raise
    return stores
