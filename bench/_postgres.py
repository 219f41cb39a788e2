"""PostgreSQL for the benchmarks: which server, whether it answers, and schemas of their own.

The server is `LORABOT_BENCH_POSTGRES_URL`, else `LORABOT_TEST_POSTGRES_URL` (the tests'), else
the local `test` database with trust auth. Everything the benchmarks make lives in schemas of
that database named `bench_...`: the cached 1,000,000-job schema (see bench.pg_dataset) and
throw-away ones, dropped after their run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("LORABOT_BENCH_POSTGRES_URL") or os.environ.get("LORABOT_TEST_POSTGRES_URL") or DEFAULT_URL


def shown(url: str) -> str:
    """The URL without its password, for notes and logs."""
    from bot.store.pg_database import redact_url

    return redact_url(url)


def in_schema(url: str, schema: str, **settings: str) -> str:
    """`url` with every connection's search_path set to `schema` (asyncpg hands unknown URL
    parameters to the server as settings), plus any other server `settings`."""
    extra = "".join(f"&{key}={value}" for key, value in {"search_path": schema, **settings}.items())
    return f"{url}{'&' if '?' in url else '?'}{extra[1:]}"


async def unreachable(url: str) -> str | None:
    """Why the server at `url` cannot be used (None when it answers)."""
    from bot.store.pg_database import PostgresDatabase, PostgresUnavailable

    try:
        db = await PostgresDatabase.open(url, min_size=1, max_size=1, connect_timeout=3)
    except PostgresUnavailable as error:
        return error.reason
    await db.close()
    return None


async def connect(url: str, **options: Any) -> Any:
    """A plain asyncpg connection (no codecs: jsonb as text), for building and inspecting data."""
    import asyncpg

    return await asyncpg.connect(url, timeout=10, **options)


@contextlib.asynccontextmanager
async def scratch_schema(url: str, purpose: str) -> AsyncIterator[str]:
    """A fresh empty schema `bench_<purpose>_<random>`, dropped on exit; yields its name."""
    name = f"bench_{purpose}_{uuid.uuid4().hex[:10]}"
    conn = await connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        try:
            yield name
        finally:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()
