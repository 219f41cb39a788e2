"""SqliteStore, what only SQLite has: timestamps stored as ISO text in UTC, JSON stored as text,
and the query plans that use the partial indexes. The semantics every store shares are in
tests/store/contract/, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from bot.jobs.model import Job, OutboxDraft
from bot.jobs.states import Action, Event, EventSource
from bot.jobs.transitions import plan_transition
from bot.store import Database
from bot.store.sqlite import SqliteStore
from tests.store_helpers import enqueue

SUBMIT = Event(Action.SUBMIT, EventSource.USER)


async def new_job(store: SqliteStore, owner: int = 1, *, guild: int | None = 10, name: str = "portrait") -> Job:
    return await store.create_job(
        owner_id=owner, guild_id=guild, channel_id=100, name=name, params={"instance_prompt": "p"}, image_count=6
    )


async def submitted_job(store: SqliteStore, owner: int = 1, *, guild: int | None = 10, name: str = "portrait") -> Job:
    job = await new_job(store, owner, guild=guild, name=name)
    await store.apply_event(job.id, SUBMIT, plan_transition)
    await store.set_card(job.id, job.channel_id, 9000 + job.id)
    return await store.require_job(job.id)


async def test_timestamps_are_stored_as_utc_iso_text(db: Database) -> None:
    moment = datetime(2030, 6, 1, 17, 30, tzinfo=timezone(timedelta(hours=5)))
    store = SqliteStore(db, now=lambda: moment)
    await submitted_job(store)
    row = await db.fetchone("SELECT created_at, updated_at, progressed_at, submitted_at FROM jobs")
    assert all(text.endswith("+00:00") and text.startswith("2030-06-01T12:30:00") for text in row)


async def test_stored_payloads_are_json_text(store: SqliteStore) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "k", {"b": 1, "a": [1, 2]}))
    row = await store.db.fetchone("SELECT payload FROM outbox WHERE dedupe_key = 'k'")
    assert row[0] == '{"a": [1, 2], "b": 1}'  # sorted keys: mark_delivered compares this text
    assert json.loads(row[0]) == {"a": [1, 2], "b": 1}
    assert datetime.fromisoformat((await store.db.fetchone("SELECT created_at FROM outbox"))[0]).tzinfo == UTC


# -- query plans ------------------------------------------------------------------------------


async def query_plan(store: SqliteStore, method, *args, **kwargs) -> str:
    """Run a store method, capture its SELECT, and return SQLite's plan for that exact query."""
    seen: list[tuple[str, tuple]] = []
    fetchall = store.db.fetchall

    async def spy(sql: str, params=()):
        seen.append((sql, tuple(params)))
        return await fetchall(sql, params)

    store.db.fetchall = spy  # type: ignore[method-assign]
    try:
        await method(*args, **kwargs)
    finally:
        del store.db.fetchall
    (sql, params) = seen[-1]
    rows = await store.db.fetchall("EXPLAIN QUERY PLAN " + sql, params)
    return " | ".join(row["detail"] for row in rows)


async def test_jobs_for_owner_uses_the_owner_index(store: SqliteStore) -> None:
    for owner in (1, 2, 3):
        await submitted_job(store, owner=owner)
    plan = await query_plan(store, store.jobs_for_owner, 1, limit=10)
    assert "USING INDEX jobs_owner_newest" in plan
    assert "TEMP B-TREE" not in plan  # the index gives the order too


async def test_overdue_jobs_uses_the_partial_active_index(store: SqliteStore, clock) -> None:
    await submitted_job(store)
    plan = await query_plan(store, store.overdue_jobs, clock())
    assert "USING INDEX jobs_active_updated" in plan
    assert "TEMP B-TREE" not in plan
