"""PostgreSQL fixtures for the store tests: `pg_url` a fresh empty schema, `pg_db` a migrated one,
each dropped after the test. The plumbing (and when it skips or fails) is in tests/postgres.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.store.pg_database import PostgresDatabase
from tests.postgres import fresh_schema, migrated_postgres


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_schema() as url:
        yield url


@pytest.fixture
async def pg_db() -> AsyncIterator[PostgresDatabase]:
    async with migrated_postgres() as database:
        yield database
