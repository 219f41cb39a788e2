"""`open_stores`: DATABASE_URL picks the adapter (sqlite:/// or postgresql://), the stores share
one database and one clock, migrating is optional and closes the database when it fails; and
`lorabot migrate` works on PostgreSQL without ever printing the password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.config import ConfigError
from bot.jobs.states import JobState
from bot.store import Database, DatabaseUnavailable, MigrationError
from bot.store.open import UnknownDatabaseUrl, database_kind, open_stores
from bot.store.pg_database import PostgresDatabase
from bot.store.postgres import PostgresStore
from bot.store.postgres_generations import PostgresGenerationStore
from bot.store.postgres_guild_settings import PostgresGuildSettingsStore
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore
from bot.store.sqlite_guild_settings import SqliteGuildSettingsStore
from tests.conftest import Clock
from tests.store.contract.conftest import new_generation, ready_job


def test_database_kind() -> None:
    assert database_kind("sqlite:///lorabot.db") == "sqlite"
    assert database_kind("sqlite:///:memory:") == "sqlite"
    assert database_kind("postgresql://u@h/db") == "postgresql"
    assert database_kind("postgres://u@h/db") == "postgresql"
    for bad in ("sqlite:///", "mysql://u:hunter2@h/db", "lorabot.db"):
        with pytest.raises(UnknownDatabaseUrl) as raised:
            database_kind(bad)
        assert isinstance(raised.value, DatabaseUnavailable) and isinstance(raised.value, ConfigError)
        assert str(raised.value).startswith("DATABASE_URL: ") and "hunter2" not in str(raised.value)


async def test_sqlite(tmp_path: Path, clock: Clock) -> None:
    stores = await open_stores(f"sqlite:///{tmp_path / 'bot.db'}", now=clock, migrate=True)
    try:
        assert stores.kind == "sqlite"
        assert isinstance(stores.jobs, SqliteStore) and isinstance(stores.generations, SqliteGenerationStore)
        assert isinstance(stores.guild_settings, SqliteGuildSettingsStore)
        assert isinstance(stores.database, Database)
        assert stores.jobs.db is stores.generations.db is stores.guild_settings.db is stores.database
        assert await stores.database.schema_version() == 6 and await stores.database.ping()
        await shared_database_and_clock(stores, clock)
    finally:
        await stores.close()


async def test_postgresql(pg_url: str, clock: Clock) -> None:
    stores = await open_stores(pg_url, now=clock)
    try:
        assert stores.kind == "postgresql"
        assert isinstance(stores.jobs, PostgresStore) and isinstance(stores.generations, PostgresGenerationStore)
        assert isinstance(stores.guild_settings, PostgresGuildSettingsStore)
        assert isinstance(stores.database, PostgresDatabase)
        assert stores.jobs.db is stores.generations.db is stores.guild_settings.db is stores.database
        assert await stores.database.schema_version() == 0  # not migrated unless asked
        assert len(await stores.database.migrate()) == 6
        assert await stores.database.ping()
        await shared_database_and_clock(stores, clock)
    finally:
        await stores.close()
    assert not await stores.database.ping()
    alias = await open_stores(pg_url.replace("postgresql://", "postgres://", 1), migrate=True)
    await alias.close()


async def shared_database_and_clock(stores, clock: Clock) -> None:
    job = await ready_job(stores.jobs)
    assert job.state is JobState.MODEL_READY and job.created_at == clock()
    generation = await stores.generations.create(new_generation(job))
    assert generation.created_at == clock()
    assert (await stores.jobs.state_counts())["generations"] == {"queued": 1}
    before, after = await stores.guild_settings.update_guild_overrides(10, {"max_active": 2}, changed_by=1)
    assert (before, after) == ({}, {"max_active": 2})
    assert [change.changed_at for change in await stores.guild_settings.guild_setting_changes(10)] == [clock()]


async def test_a_failed_migration_closes_the_database(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = await PostgresDatabase.open(pg_url)
    await setup.migrate()
    await setup.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    await setup.close()
    closed: list[PostgresDatabase] = []
    close = PostgresDatabase.close

    async def recording_close(self: PostgresDatabase, seconds: float = 10.0) -> None:
        closed.append(self)
        await close(self, seconds)

    monkeypatch.setattr(PostgresDatabase, "close", recording_close)
    with pytest.raises(MigrationError, match="schema version 99"):
        await open_stores(pg_url, migrate=True)
    assert len(closed) == 1 and not await closed[0].ping()


async def test_an_unreachable_postgresql_is_a_configuration_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="DATABASE_URL") as raised:
        await open_stores("postgresql://lorabot:hunter2-secret@127.0.0.1:1/lorabot")
    assert "hunter2" not in str(raised.value)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{parts.hostname}{port}"))


def test_lorabot_migrate_on_postgresql_never_prints_the_password(pg_url: str, tmp_path: Path) -> None:
    url = with_password(pg_url, "hunter2-secret")  # trust auth: the password is not checked
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATABASE_URL": url}
    command = [sys.executable, "-m", "bot", "migrate"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False)
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert "applied 6 migration(s); schema version 6" in first.stdout
    assert "applied 0 migration(s); schema version 6" in second.stdout
    assert "database: postgresql://postgres:***@" in first.stderr
    assert "hunter2" not in first.stdout + first.stderr + second.stdout + second.stderr

    bad = subprocess.run(
        [*command, "--database-url", "postgresql://u:hunter2-secret@127.0.0.1:1/db"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("DATABASE_URL: ")
    assert "hunter2" not in bad.stdout + bad.stderr
