"""Which database the end-to-end tests run the bot on, and reading it from outside a bot process.

`LORABOT_TEST_DATABASE=postgresql` puts every test's bot (the in-test `Application` and each
`lorabot run` subprocess) on a fresh PostgreSQL schema, dropped after the test; unset or `sqlite`,
on a SQLite file in the test's temp directory. Tests about SQLite itself carry `sqlite_only`, and
tests that need PostgreSQL (several processes sharing one database) carry `postgres_only`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from bot.jobs.generation_model import Generation
from bot.jobs.model import Job
from bot.store.pg_database import PostgresDatabase
from bot.store.pg_rows import generation_from_record, job_from_record
from bot.store.rows import generation_from_row, job_from_row
from tests.postgres import fresh_schema

T = TypeVar("T")

DATABASE = os.environ.get("LORABOT_TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
if DATABASE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"LORABOT_TEST_DATABASE must be sqlite or postgresql, not {DATABASE!r}")
ON_POSTGRES = DATABASE == "postgresql"

#: Each running test's PostgreSQL URL, by its temp directory (one fresh schema per test).
_postgres_urls: dict[Path, str] = {}


def sqlite_only(why: str) -> pytest.MarkDecorator:
    """For a test about SQLite itself, which the PostgreSQL pass skips."""
    return pytest.mark.skipif(ON_POSTGRES, reason=f"about SQLite itself ({why}): the PostgreSQL pass skips it")


def postgres_only(why: str) -> pytest.MarkDecorator:
    """For a test that needs PostgreSQL, which runs in the PostgreSQL pass only."""
    return pytest.mark.skipif(
        not ON_POSTGRES, reason=f"needs PostgreSQL ({why}): runs in the pass with LORABOT_TEST_DATABASE=postgresql"
    )


def database_url(directory: Path) -> str:
    """The DATABASE_URL of a bot whose directory is the test's temp directory or one under it: a
    SQLite file there, or the test's PostgreSQL schema, which every process of the test shares (as
    the processes of one deployment do)."""
    for tmp_path, url in _postgres_urls.items():
        if directory == tmp_path or tmp_path in directory.parents:
            return url
    if ON_POSTGRES:
        raise AssertionError(f"no PostgreSQL schema for {directory}: the e2e_database fixture did not run")
    return f"sqlite:///{directory / 'bot.db'}"


@asynccontextmanager
async def e2e_database(tmp_path: Path) -> AsyncIterator[str]:
    """The test's database for as long as the test runs: on PostgreSQL a fresh schema (skipped, or
    failed under LORABOT_REQUIRE_POSTGRES=1, when the server is unreachable), dropped after."""
    if not ON_POSTGRES:
        yield database_url(tmp_path)
        return
    async with fresh_schema() as url:
        _postgres_urls[tmp_path] = url
        try:
            yield url
        finally:
            del _postgres_urls[tmp_path]


class StoredRecords:
    """A bot process's jobs and generations, read from outside it (never written, never created)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg: PostgresDatabase | None = None

    async def job(self, job_id: int) -> Job | None:
        if self.url.startswith("sqlite:///"):
            row = self._sqlite_row("SELECT * FROM jobs WHERE id = ?", (job_id,))
            return job_from_row(row) if row else None
        record = await self._pg_row("SELECT * FROM jobs WHERE id = $1", job_id)
        return job_from_record(record) if record else None

    async def latest_generation(self) -> Generation | None:
        if self.url.startswith("sqlite:///"):
            row = self._sqlite_row("SELECT * FROM generations ORDER BY id DESC LIMIT 1", ())
            return generation_from_row(row) if row else None
        record = await self._pg_row("SELECT * FROM generations ORDER BY id DESC LIMIT 1")
        return generation_from_record(record) if record else None

    def _sqlite_row(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Row | None:
        path = self.url.removeprefix("sqlite:///")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            return None  # the process has not created the file yet
        conn.row_factory = sqlite3.Row
        try:
            row: sqlite3.Row | None = conn.execute(sql, args).fetchone()
            return row
        except sqlite3.OperationalError:
            return None  # not migrated yet
        finally:
            conn.close()

    async def _pg_row(self, sql: str, *args: Any) -> Any:
        if self._pg is None:
            self._pg = await PostgresDatabase.open(self.url, min_size=1, max_size=1)
        try:
            return await self._pg.fetchrow(sql, *args)
        except asyncpg.UndefinedTableError:
            return None  # not migrated yet

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()


@asynccontextmanager
async def stored_records(tmp_path: Path) -> AsyncIterator[StoredRecords]:
    records = StoredRecords(database_url(tmp_path))
    try:
        yield records
    finally:
        await records.close()


async def _wait(read: Callable[[], Any], check: Callable[[T], bool], timeout: float, what: str) -> T:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await read()
        if found is not None and check(found):
            return found  # type: ignore[no-any-return]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} never matched; last {found}")
        await asyncio.sleep(0.05)


async def wait_stored_job(
    tmp_path: Path,
    job_id: int,
    check: Callable[[Job], bool],
    timeout: float = 30,  # noqa: ASYNC109
) -> Job:
    """The job as a bot process stored it, once `check` holds."""
    async with stored_records(tmp_path) as records:
        return await _wait(lambda: records.job(job_id), check, timeout, f"job {job_id}")


async def wait_stored_generation(
    tmp_path: Path,
    check: Callable[[Generation], bool],
    timeout: float = 30,  # noqa: ASYNC109
) -> Generation:
    """The latest generation as a bot process stored it, once `check` holds."""
    async with stored_records(tmp_path) as records:
        return await _wait(records.latest_generation, check, timeout, "the latest generation")
