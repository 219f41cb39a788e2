"""What only tests need, for either store (the product never calls these): writing an outbox item
outside a transition, every due item leased or not, counting what is undelivered, finding a job
by its training id, counting rows with plain SQL. SQLite's come from tests/store_helpers.py;
PostgreSQL's write through the store's own outbox SQL, as SQLite's do through `write_outbox`."""

from __future__ import annotations

import itertools
import re
from typing import Any

from bot.jobs.model import Job, OutboxDraft, OutboxItem
from bot.store.pg_outbox import draft_arrays, draft_ctes
from bot.store.pg_rows import job_from_record, outbox_item_from_record
from bot.store.postgres import PostgresStore, utc
from bot.store.sqlite import SqliteStore
from tests import store_helpers as sqlite_helpers
from tests.store_helpers import require_generation

__all__ = [
    "count_rows",
    "due_outbox",
    "enqueue",
    "job_by_training_id",
    "pending_outbox_count",
    "require_generation",
]

AnyStore = SqliteStore | PostgresStore

#: One draft, written by the same CTEs as a state change's drafts: $1 job id, $2-$5 the draft, $6 now.
_PG_ENQUEUE = "WITH source AS (SELECT $1::bigint AS job_id)" + draft_ctes("source", "job_id", 2, "$6") + " SELECT 1"


async def enqueue(store: AnyStore, job_id: int | None, draft: OutboxDraft) -> None:
    if isinstance(store, SqliteStore):
        await sqlite_helpers.enqueue(store, job_id, draft)
        return
    await store.db.execute(_PG_ENQUEUE, job_id, *draft_arrays([draft]), utc(store.now()))


async def due_outbox(store: AnyStore, *, limit: int = 50) -> list[OutboxItem]:
    if isinstance(store, SqliteStore):
        return await sqlite_helpers.due_outbox(store, limit=limit)
    rows = await store.db.fetch(
        "SELECT * FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, id"
        " LIMIT $2",
        utc(store.now()),
        limit,
    )
    return [outbox_item_from_record(row) for row in rows]


async def pending_outbox_count(store: AnyStore) -> int:
    if isinstance(store, SqliteStore):
        return await sqlite_helpers.pending_outbox_count(store)
    return int(await store.db.fetchval("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"))


async def job_by_training_id(store: AnyStore, training_id: str) -> Job | None:
    if isinstance(store, SqliteStore):
        return await sqlite_helpers.job_by_training_id(store, training_id)
    row = await store.db.fetchrow("SELECT * FROM jobs WHERE training_id = $1", training_id)
    return job_from_record(row) if row else None


async def count_rows(store: AnyStore, sql: str, *args: Any) -> int:
    """The integer `sql` (written with `?` placeholders, in SQL both databases read alike) returns."""
    if isinstance(store, SqliteStore):
        row = await store.db.fetchone(sql, args)
        return int(row[0]) if row else 0
    numbers = itertools.count(1)
    return int(await store.db.fetchval(re.sub(r"\?", lambda _match: f"${next(numbers)}", sql), *args))
