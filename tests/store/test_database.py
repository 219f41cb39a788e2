"""Database: pragmas, serialized transactions, numbered migrations applied atomically and idempotently."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.config import ConfigError
from bot.store import Database, DatabaseUnavailable, MigrationError, load_migrations
from bot.store.database import Migration, split_statements

TABLES = {
    "jobs",
    "job_events",
    "outbox",
    "users",
    "kv",
    "provider_listings",
    "provider_models",
    "generations",
    "generation_images",
    "state_counts",
    "previews",
    "preview_photos",
    "guild_settings",
    "guild_setting_changes",
    "schema_migrations",
}
INDEXES = {
    "jobs_owner_newest",
    "jobs_guild_submitted",
    "jobs_active_updated",
    "outbox_pending",
    "provider_models_first_listing",
    "guild_settings_left",
    "guild_setting_changes_newest",
    "jobs_guild_newest",
}


async def names(db: Database, kind: str) -> set[str]:
    rows = await db.fetchall("SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'", (kind,))
    return {row[0] for row in rows}


async def schema_snapshot(db: Database) -> list[tuple[object, ...]]:
    rows = await db.fetchall("SELECT type, name, sql FROM sqlite_master ORDER BY name")
    return [tuple(row) for row in rows]


@pytest.fixture
async def raw_db(tmp_path: Path):
    """An opened database with no migration applied."""
    database = await Database.open(str(tmp_path / "raw.db"))
    try:
        yield database
    finally:
        await database.close()


MIGRATIONS = [
    (1, "initial"),
    (2, "provider_models"),
    (3, "generations"),
    (4, "state_counts"),
    (5, "leases_previews"),
    (6, "guild_settings"),
]


async def test_a_fresh_database_gets_every_migration_and_every_table(raw_db: Database) -> None:
    assert await raw_db.schema_version() == 0
    applied = await raw_db.migrate()
    assert [(m.version, m.name) for m in applied] == MIGRATIONS
    assert await raw_db.schema_version() == len(MIGRATIONS)
    assert await names(raw_db, "table") == TABLES
    assert await names(raw_db, "index") >= INDEXES
    rows = await raw_db.fetchall("SELECT version, name, applied_at FROM schema_migrations")
    assert [(row[0], row[1]) for row in rows] == MIGRATIONS
    assert rows[0][2].endswith("+00:00")


async def test_migrating_twice_applies_nothing_and_changes_nothing(raw_db: Database) -> None:
    await raw_db.migrate()
    before_schema = await schema_snapshot(raw_db)
    before_rows = [tuple(r) for r in await raw_db.fetchall("SELECT * FROM schema_migrations")]
    changes = (await raw_db.fetchone("SELECT total_changes()"))[0]

    assert await raw_db.migrate() == []

    assert await schema_snapshot(raw_db) == before_schema
    assert [tuple(r) for r in await raw_db.fetchall("SELECT * FROM schema_migrations")] == before_rows
    assert (await raw_db.fetchone("SELECT total_changes()"))[0] == changes


async def test_reopening_a_migrated_file_applies_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "again.db")
    first = await Database.open(path)
    assert len(await first.migrate()) == len(MIGRATIONS)
    await first.close()
    second = await Database.open(path)
    try:
        assert await second.migrate() == []
        assert await second.schema_version() == len(MIGRATIONS)
    finally:
        await second.close()


async def test_a_database_newer_than_the_code_is_refused(raw_db: Database) -> None:
    await raw_db.schema_version()  # creates schema_migrations
    async with raw_db.transaction() as conn:
        await conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2099-01-01T00:00:00+00:00')")
    with pytest.raises(MigrationError) as caught:
        await raw_db.migrate()
    message = str(caught.value)
    assert "schema version 99" in message
    assert "newer than this code" in message
    assert f"({len(MIGRATIONS)})" in message
    assert "jobs" not in await names(raw_db, "table")  # nothing was applied underneath it


async def test_a_failing_migration_leaves_no_partial_changes_and_is_not_recorded(raw_db: Database) -> None:
    good = Migration(1, "first", "CREATE TABLE a (x INTEGER);")
    broken = Migration(
        2,
        "broken",
        "CREATE TABLE b (y INTEGER);\n"
        "INSERT INTO a (x) VALUES (1);\n"
        "INSERT INTO missing_table (z) VALUES (1);\n"  # fails midway
        "CREATE TABLE c (z INTEGER);",
    )
    with pytest.raises(sqlite3.OperationalError, match="missing_table"):
        await raw_db.migrate([good, broken])

    assert await raw_db.schema_version() == 1  # the first one committed on its own
    tables = await names(raw_db, "table")
    assert "a" in tables
    assert "b" not in tables
    assert "c" not in tables
    assert (await raw_db.fetchone("SELECT COUNT(*) FROM a"))[0] == 0
    assert [row[0] for row in await raw_db.fetchall("SELECT version FROM schema_migrations")] == [1]
    assert not raw_db._conn.in_transaction  # rolled back, the connection is usable

    fixed = Migration(2, "fixed", "CREATE TABLE b (y INTEGER); INSERT INTO a (x) VALUES (1);")
    assert [m.version for m in await raw_db.migrate([good, fixed])] == [2]
    assert (await raw_db.fetchone("SELECT COUNT(*) FROM a"))[0] == 1


async def test_wal_foreign_keys_busy_timeout_and_synchronous_are_set(db: Database) -> None:
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1
    assert (await db.fetchone("PRAGMA busy_timeout"))[0] == 5000
    assert (await db.fetchone("PRAGMA synchronous"))[0] == 1  # NORMAL


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO job_events (job_id, status, source, received_at, applied)"
                " VALUES (12345, 'x', 'poll', '2024-01-01T00:00:00+00:00', 0)"
            )


async def test_open_creates_the_parent_directory_and_a_custom_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.db"
    database = await Database.open(str(path), busy_timeout_ms=1234)
    try:
        assert path.parent.is_dir()
        assert (await database.fetchone("PRAGMA busy_timeout"))[0] == 1234
    finally:
        await database.close()


@pytest.mark.parametrize("where", ["file", "directory"])
async def test_a_database_that_cannot_be_opened_names_database_url_and_the_path(tmp_path: Path, where: str) -> None:
    """A path under a regular file, or a directory: one message naming the setting and the path,
    raised before aiosqlite's thread starts (one left behind would print "Event loop is closed")."""
    import threading

    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / "bot.db" if where == "file" else tmp_path

    def sqlite_threads() -> int:
        return sum("_connection_worker_thread" in thread.name for thread in threading.enumerate())

    threads = sqlite_threads()
    with pytest.raises(DatabaseUnavailable) as raised:
        await Database.open(str(path))
    message = str(raised.value)
    assert message.startswith("DATABASE_URL: ") and str(path) in message and "\n" not in message
    assert isinstance(raised.value, ConfigError)
    assert sqlite_threads() == threads


async def test_a_failed_transaction_is_rolled_back(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO kv (key, value) VALUES ('a', '1')")
            raise RuntimeError("crash mid-transaction")
    assert await db.fetchone("SELECT * FROM kv") is None
    async with db.transaction() as conn:  # and the next one works
        await conn.execute("INSERT INTO kv (key, value) VALUES ('b', '2')")
    assert (await db.fetchone("SELECT value FROM kv WHERE key = 'b'"))[0] == "2"


async def test_transactions_are_serialized(db: Database) -> None:
    """Two coroutines never interleave statements of different transactions on the one connection."""
    order: list[str] = []
    inside = asyncio.Event()

    async def first() -> None:
        async with db.transaction() as conn:
            order.append("first begins")
            inside.set()
            for _ in range(5):
                await asyncio.sleep(0)
            await conn.execute("INSERT INTO kv (key, value) VALUES ('first', '1')")
            order.append("first ends")

    async def second() -> None:
        await inside.wait()
        async with db.transaction() as conn:
            order.append("second begins")
            await conn.execute("INSERT INTO kv (key, value) VALUES ('second', '2')")

    await asyncio.gather(first(), second())
    assert order == ["first begins", "first ends", "second begins"]
    assert (await db.fetchone("SELECT COUNT(*) FROM kv"))[0] == 2


async def test_ping(tmp_path: Path) -> None:
    database = await Database.open(str(tmp_path / "ping.db"))
    assert await database.ping() is True
    await database.close()
    assert await database.ping() is False


def test_split_statements_keeps_semicolons_inside_strings_and_triggers() -> None:
    script = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE t (x TEXT);\n"
        "INSERT INTO t VALUES ('a;b');\n"
        'INSERT INTO t VALUES ("c;d");\n'
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 'e;f'; DELETE FROM t WHERE 0; END;\n"
        ";\n"
    )
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[1] == "INSERT INTO t VALUES ('a;b');"
    assert statements[2] == 'INSERT INTO t VALUES ("c;d");'
    assert statements[3].startswith("CREATE TRIGGER") and statements[3].endswith("END;")
    connection = sqlite3.connect(":memory:")
    for statement in statements:
        connection.execute(statement)
    assert connection.execute("SELECT x FROM t ORDER BY rowid").fetchall() == [("a;b",), ("c;d",)]
    connection.execute("INSERT INTO t VALUES ('z')")  # fires the trigger, body intact
    assert connection.execute("SELECT x FROM t").fetchall() == [("e;f",)] * 3


def test_split_statements_refuses_an_incomplete_statement() -> None:
    with pytest.raises(MigrationError, match="incomplete"):
        split_statements("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('unterminated;")


def test_split_statements_of_the_real_migration() -> None:
    statements = split_statements(load_migrations()[0].sql)
    assert sum(s.lstrip().upper().startswith("CREATE TABLE") or "\nCREATE TABLE" in s for s in statements) == 5
    assert sum("CREATE INDEX" in s for s in statements) == 4


def test_load_migrations_orders_and_validates(tmp_path: Path) -> None:
    assert [(m.version, m.name) for m in load_migrations()] == MIGRATIONS

    (tmp_path / "0002_second.sql").write_text("SELECT 2;")
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    assert [m.version for m in load_migrations(tmp_path)] == [1, 2]

    (tmp_path / "0004_gap.sql").write_text("SELECT 4;")
    with pytest.raises(MigrationError, match="0003 is missing"):
        load_migrations(tmp_path)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "1_no_padding.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description"):
        load_migrations(bad)


def test_finding_no_migration_is_an_error_not_an_empty_schema(tmp_path: Path) -> None:
    """An installation that lost its migrations must not 'apply 0 migrations' and carry on."""
    (tmp_path / "README.txt").write_text("not a migration")
    with pytest.raises(MigrationError, match="no migration files"):
        load_migrations(tmp_path)
    with pytest.raises(MigrationError, match="cannot list"):
        load_migrations(tmp_path / "missing")


def test_the_migrations_are_read_from_the_migrations_package() -> None:
    import migrations

    files = sorted(p.name for p in Path(migrations.__file__).parent.glob("*.sql"))
    assert [f"{m.version:04d}_{m.name}.sql" for m in load_migrations()] == files


async def test_concurrent_transactions_are_atomic_and_committed_before_returning(db: Database) -> None:
    """Each run_transaction is atomic on its own: a failing one rolls back only itself, and
    every caller returns only after its write is committed."""
    import asyncio
    import sqlite3

    def insert(key: str, fail: bool = False):
        def work(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO kv (key, value) VALUES (?, 'v')", (key,))
            if fail:
                raise ValueError(key)
            return key

        return work

    writes = (db.run_transaction(insert(f"k{i}", fail=i == 3)) for i in range(8))
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [r if isinstance(r, str) else type(r).__name__ for r in results] == [
        "k0", "k1", "k2", "ValueError", "k4", "k5", "k6", "k7"
    ]  # fmt: skip
    other = sqlite3.connect(db.path)  # another connection sees only committed data
    keys = {row[0] for row in other.execute("SELECT key FROM kv")}
    other.close()
    assert keys == {f"k{i}" for i in range(8)} - {"k3"}
