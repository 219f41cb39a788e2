"""PostgresDatabase: migrations (the same numbered schema as SQLite, atomic, idempotent, newer
refused, concurrent starts), timeouts, retries, and errors that name DATABASE_URL but never the
password."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.config import ConfigError
from bot.store import Database, DatabaseUnavailable, MigrationError, load_migrations
from bot.store.database import Migration
from bot.store.pg_database import PostgresDatabase, PostgresUnavailable, load_postgres_migrations, redact_url
from tests.postgres import ADMIN_URL
from tests.store.test_database import MIGRATIONS


@pytest.fixture
async def raw(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    """A pool on a fresh schema with no migration applied."""
    database = await PostgresDatabase.open(pg_url)
    try:
        yield database
    finally:
        await database.close()


async def pg_schema(db: PostgresDatabase) -> dict[str, object]:
    """Tables with their columns in order, indexes, triggers and constraints of the current schema."""
    columns = await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, list[str]] = {}
    for table, column in columns:
        tables.setdefault(table, []).append(column)
    indexes = await db.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    triggers = await db.fetch(
        "SELECT DISTINCT trigger_name FROM information_schema.triggers WHERE trigger_schema = current_schema()"
    )
    return {"tables": tables, "indexes": {r[0] for r in indexes}, "triggers": {r[0] for r in triggers}}


async def sqlite_schema(db: Database) -> dict[str, object]:
    names = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    tables = {row[0]: [c[1] for c in await db.fetchall(f"PRAGMA table_info({row[0]})")] for row in names}
    indexes = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    triggers = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return {"tables": tables, "indexes": {r[0] for r in indexes}, "triggers": {r[0] for r in triggers}}


def named_indexes(schema: dict[str, object]) -> set[str]:
    """The indexes a migration names (not those the databases make for keys and UNIQUE)."""
    return {name for name in schema["indexes"] if not name.endswith(("_pkey", "_key"))}  # type: ignore[attr-defined]


async def test_every_version_means_the_same_schema_on_both_databases(pg_url: str, tmp_path: Path) -> None:
    """Same tables, same columns in the same order, same named indexes and triggers, version by version."""
    pg = await PostgresDatabase.open(pg_url)
    lite = await Database.open(str(tmp_path / "same.db"))
    try:
        for version in range(1, len(MIGRATIONS) + 1):
            await pg.migrate([m for m in load_postgres_migrations() if m.version <= version])
            await lite.migrate([m for m in load_migrations() if m.version <= version])
            theirs, ours = await sqlite_schema(lite), await pg_schema(pg)
            assert ours["tables"] == theirs["tables"], version
            assert named_indexes(ours) == named_indexes(theirs), version
            assert ours["triggers"] == theirs["triggers"], version
            assert await pg.schema_version() == await lite.schema_version() == version
    finally:
        await pg.close()
        await lite.close()


async def test_a_fresh_database_gets_every_migration(raw: PostgresDatabase) -> None:
    assert await raw.schema_version() == 0
    assert await raw.fetchval("SELECT to_regclass('schema_migrations')") is None  # reading wrote nothing
    applied = await raw.migrate()
    assert [(m.version, m.name) for m in applied] == MIGRATIONS
    assert await raw.schema_version() == len(MIGRATIONS)
    rows = await raw.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert [(row[0], row[1]) for row in rows] == MIGRATIONS
    assert rows[0][2].utcoffset().total_seconds() == 0


async def test_migrating_twice_applies_nothing_and_changes_nothing(raw: PostgresDatabase) -> None:
    await raw.migrate()
    before = (await pg_schema(raw), [tuple(r) for r in await raw.fetch("SELECT * FROM schema_migrations")])
    assert await raw.migrate() == []
    assert (await pg_schema(raw), [tuple(r) for r in await raw.fetch("SELECT * FROM schema_migrations")]) == before


async def test_processes_starting_together_apply_each_migration_once(pg_url: str) -> None:
    pools = [await PostgresDatabase.open(pg_url, max_size=2) for _ in range(4)]
    try:
        results = await asyncio.gather(*(pool.migrate() for pool in pools))
        assert sorted(m.version for applied in results for m in applied) == [v for v, _ in MIGRATIONS]
        assert await pools[0].fetchval("SELECT COUNT(*) FROM schema_migrations") == len(MIGRATIONS)
    finally:
        for pool in pools:
            await pool.close()


async def test_a_database_newer_than_the_code_is_refused(raw: PostgresDatabase) -> None:
    await raw.migrate(load_postgres_migrations()[:1])
    await raw.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    with pytest.raises(MigrationError) as caught:
        await raw.migrate()
    message = str(caught.value)
    assert "schema version 99" in message and "newer than this code" in message and f"({len(MIGRATIONS)})" in message
    assert await raw.fetchval("SELECT to_regclass('generations')") is None  # nothing was applied underneath it


async def test_a_failing_migration_leaves_no_partial_changes_and_is_not_recorded(raw: PostgresDatabase) -> None:
    good = Migration(1, "first", "CREATE TABLE a (x integer);")
    broken = Migration(
        2,
        "broken",
        "CREATE TABLE b (y integer); INSERT INTO a (x) VALUES (1); INSERT INTO missing_table (z) VALUES (1);"
        " CREATE TABLE c (z integer);",
    )
    with pytest.raises(MigrationError, match=r"0002_broken failed.*missing_table"):
        await raw.migrate([good, broken])
    assert await raw.schema_version() == 1  # the first one committed on its own
    assert await raw.fetchval("SELECT to_regclass('b')") is None
    assert await raw.fetchval("SELECT COUNT(*) FROM a") == 0

    fixed = Migration(2, "fixed", "CREATE TABLE b (y integer); INSERT INTO a (x) VALUES (1);")
    assert [m.version for m in await raw.migrate([good, fixed])] == [2]
    assert await raw.fetchval("SELECT COUNT(*) FROM a") == 1


def test_the_postgres_migrations_are_package_data_numbered_like_sqlites() -> None:
    import migrations.postgres

    files = sorted(p.name for p in Path(migrations.postgres.__file__).parent.glob("*.sql"))
    assert [f"{m.version:04d}_{m.name}.sql" for m in load_postgres_migrations()] == files
    assert [(m.version, m.name) for m in load_postgres_migrations()] == [(m.version, m.name) for m in load_migrations()]


async def test_ping_and_close(pg_url: str) -> None:
    database = await PostgresDatabase.open(pg_url)
    assert await database.ping() is True
    await database.close()
    assert await database.ping() is False


async def test_every_statement_has_a_time_limit(pg_url: str) -> None:
    database = await PostgresDatabase.open(pg_url, command_timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await database.fetchval("SELECT pg_sleep(5)")
        assert await database.fetchval("SELECT 1") == 1  # the pool recovers
    finally:
        await database.close()


async def test_waiting_for_a_pooled_connection_has_a_time_limit(pg_url: str) -> None:
    database = await PostgresDatabase.open(pg_url, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with database.connection():
            with pytest.raises(TimeoutError):
                await database.fetchval("SELECT 1")
    finally:
        await database.close()


async def test_a_deadlock_or_serialization_failure_is_retried(pg_url: str) -> None:
    database = await PostgresDatabase.open(pg_url)
    calls: list[int] = []

    async def work(conn: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return "done"

    async def always(conn: object) -> str:
        raise asyncpg.SerializationError("could not serialize access")

    try:
        assert await database.run(work, transaction=True) == "done"
        assert len(calls) == 3
        with pytest.raises(asyncpg.SerializationError):
            await database.run(always)
    finally:
        await database.close()


# -- errors name DATABASE_URL, never the password ---------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_server_is_one_line_naming_database_url_without_the_password() -> None:
    url = f"postgresql://lorabot:hunter2-secret@127.0.0.1:{closed_port()}/lorabot"
    with pytest.raises(PostgresUnavailable) as raised:
        await PostgresDatabase.open(url, connect_timeout=2)
    message = str(raised.value)
    assert isinstance(raised.value, DatabaseUnavailable) and isinstance(raised.value, ConfigError)
    assert message.startswith("DATABASE_URL: ") and "\n" not in message
    assert "hunter2" not in message and "lorabot:***@127.0.0.1" in message


async def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections into the backlog, never says a word
    try:
        port = listener.getsockname()[1]
        with pytest.raises(PostgresUnavailable, match=r"\(no answer within 0\.3 s\)"):
            await PostgresDatabase.open(f"postgresql://u:pw@127.0.0.1:{port}/db", connect_timeout=0.3)
    finally:
        listener.close()


def with_database(url: str, name: str, password: str) -> str:
    """The test server's URL for another database, with a password (trust auth ignores it)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(
        parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{parts.hostname}{port}", path=f"/{name}")
    )


async def test_a_missing_database_and_a_bad_url_are_unavailable(pg_url: str) -> None:
    with pytest.raises(PostgresUnavailable, match="does not exist") as raised:
        await PostgresDatabase.open(with_database(ADMIN_URL, "lorabot_no_such_database", "s3cret-pw"))
    assert "s3cret" not in str(raised.value)
    with pytest.raises(PostgresUnavailable, match="postgresql://"):
        await PostgresDatabase.open("mysql://u:pw@host/db")
    with pytest.raises(PostgresUnavailable) as bad:
        await PostgresDatabase.open("postgresql://u:s3cret-pw@127.0.0.1:notaport/db")
    assert "s3cret" not in str(bad.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgres://u@h/db") == "postgres://u@h/db"
    assert (
        redact_url("postgresql://h/db?sslmode=require&password=zz") == "postgresql://h/db?sslmode=require&password=***"
    )
    assert redact_url("postgresql://:pw@h/db") == "postgresql://:***@h/db"
    assert redact_url("postgresql://[broken:pw@") == "postgresql://[broken:***@"
