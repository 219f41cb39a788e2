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


async def create_schema(url: str, purpose: str) -> str:
    """A fresh empty schema `bench_<purpose>_<random>` (drop it with drop_schema); returns its name."""
    name = f"bench_{purpose}_{uuid.uuid4().hex[:10]}"
    conn = await connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    return name


async def drop_schema(url: str, name: str) -> None:
    conn = await connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def _socket_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process `pid` holds (Linux /proc; empty elsewhere)."""
    import os

    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        return set()
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


async def backend_pids(conn: Any, client_pids: list[int]) -> list[int]:
    """The PostgreSQL backends serving the connections of these client processes (matched by the
    client's TCP port; none over a Unix socket)."""
    ports = sorted(set().union(*(_socket_ports(pid) for pid in client_pids)))
    if not ports:
        return []
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[]) AND datname = current_database()",
        ports,
    )
    return [int(row[0]) for row in rows]
