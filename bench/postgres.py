"""Benchmark 6: PostgreSQL beside SQLite: the store at 1,000,000 jobs (bench.pg_store) and webhook
ingest with one and with two bot processes (bench.pg_webhooks), each against SQLite in the same run.

One benchmark of its own rather than PostgreSQL rows in `store` and `webhooks`: its baseline is
SQLite (theirs are sqlite3 alone and a bare aiohttp handler), it needs a server the others do
not, and without one it is skipped as a whole with the reason, leaving the other tables as they
were. The server is LORABOT_BENCH_POSTGRES_URL (else LORABOT_TEST_POSTGRES_URL, else the local
`test` database); see bench._postgres.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench._common import Row, Section
from bench._postgres import server_url, shown, unreachable


def run(quick: bool, log: Any = print) -> Section:
    from bench import pg_store, pg_webhooks

    url = server_url()
    reason = asyncio.run(unreachable(url))
    if reason is not None:
        return Section(
            "postgres",
            [
                Row(
                    "6 postgres",
                    "skipped: PostgreSQL is not reachable",
                    "n/a",
                    note=f"{shown(url)}: {reason}; set LORABOT_BENCH_POSTGRES_URL to a database this user may "
                    "create schemas in",
                )
            ],
        )
    section = Section("postgres")
    for part in (pg_store.run(quick, url, log), pg_webhooks.run(quick, url)):
        section.rows += part.rows
        section.details += part.details
    return section
