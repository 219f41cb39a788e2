"""PostgreSQL for the tests that need it: a fresh schema of the test database per test, dropped after.

The server is `LORABOT_TEST_POSTGRES_URL` (default: the local `test` database, trust auth). When it
cannot be reached those tests are skipped with the reason, unless `LORABOT_REQUIRE_POSTGRES=1`,
which makes them fail instead (CI, where PostgreSQL must be there).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.store.pg_database import PostgresDatabase, PostgresUnavailable

ADMIN_URL = os.environ.get("LORABOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_unreachable: list[str] = []  # the reason, once found: later tests do not wait for the timeout again


def postgres_required() -> bool:
    return os.environ.get("LORABOT_REQUIRE_POSTGRES") == "1"


def skip_or_fail(reason: str) -> None:
    if postgres_required():
        pytest.fail(f"LORABOT_REQUIRE_POSTGRES=1 but PostgreSQL is not usable: {reason}")
    pytest.skip(f"PostgreSQL is not reachable ({reason}); set LORABOT_TEST_POSTGRES_URL to test it")


async def open_admin() -> PostgresDatabase:
    """A small pool on the test database itself (its default schema), or skip/fail."""
    if _unreachable:
        skip_or_fail(_unreachable[0])
    try:
        return await PostgresDatabase.open(ADMIN_URL, min_size=1, max_size=2, connect_timeout=3)
    except PostgresUnavailable as error:
        _unreachable.append(str(error))
        skip_or_fail(str(error))
        raise


def in_schema(url: str, schema: str) -> str:
    """`url` with every connection's search_path set to `schema` (asyncpg passes unknown URL
    parameters on as server settings). Commits do not wait for the disk: tests need no durability."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}&synchronous_commit=off"


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """The URL of a fresh, empty schema (no migration applied), dropped on exit."""
    admin = await open_admin()
    schema = f"lorabot_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield in_schema(ADMIN_URL, schema)
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@asynccontextmanager
async def migrated_postgres() -> AsyncIterator[PostgresDatabase]:
    """A pool on a fresh schema with every migration applied."""
    async with fresh_schema() as url:
        database = await PostgresDatabase.open(url)
        try:
            await database.migrate()
            yield database
        finally:
            await database.close()
