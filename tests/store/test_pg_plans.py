"""PostgreSQL query plans: the hot reads can use the indexes made for them (the partial ones
included: their WHERE must be implied by the query's). Sequential scans are disabled while
planning, since on a test-sized table PostgreSQL rightly prefers them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.jobs.states import JobState
from bot.jobs.transitions import plan_transition
from bot.store.pg_database import PostgresDatabase
from bot.store.postgres import PostgresStore
from bot.store.postgres_generations import PostgresGenerationStore
from tests.conftest import Clock
from tests.store.contract.conftest import accepted, new_generation, ready_job, submitted_job


async def plan_of(db: PostgresDatabase, call: Callable[[], Awaitable[Any]]) -> str:
    """Run a store method, capture the last query it read with, and return PostgreSQL's plan for it."""
    seen: list[tuple[str, tuple[Any, ...]]] = []
    originals = {name: getattr(db, name) for name in ("fetch", "fetchrow", "fetchval")}

    def spy(name: str) -> Callable[..., Awaitable[Any]]:
        async def record(sql: str, *args: Any) -> Any:
            seen.append((sql, args))
            return await originals[name](sql, *args)

        return record

    for name in originals:
        setattr(db, name, spy(name))
    try:
        await call()
    finally:
        for name in originals:
            delattr(db, name)
    sql, args = seen[-1]
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + sql, *args)
    return "\n".join(row[0] for row in rows)


@pytest.fixture
async def stores(pg_db: PostgresDatabase, clock: Clock) -> tuple[PostgresStore, PostgresGenerationStore]:
    jobs = PostgresStore(pg_db, now=clock)
    generations = PostgresGenerationStore(pg_db, now=clock)
    for owner in (1, 2, 3):
        job = await submitted_job(jobs, owner=owner)
        await jobs.apply_event(job.id, accepted(f"T{owner}"), plan_transition)
    model = await ready_job(jobs, owner=4)
    await generations.create(new_generation(model))
    return jobs, generations


@pytest.mark.parametrize(
    ("name", "call", "index"),
    [
        ("mymodels", lambda j, g, now: j.jobs_for_owner(1, limit=10), "jobs_owner_newest"),
        ("autocomplete", lambda j, g, now: j.search_owner_jobs(1, "por"), "jobs_owner_newest"),
        ("reconciler", lambda j, g, now: j.overdue_jobs(now), "jobs_active_updated"),
        (
            "guild quota",
            lambda j, g, now: j.submissions_since(now - timedelta(days=1), guild_id=10),
            "jobs_guild_submitted",
        ),
        (
            "server's jobs",
            lambda j, g, now: j.guild_jobs(10, [JobState.SUBMITTING, JobState.DEPLOYING_GPU], updated_since=now),
            "jobs_guild_newest",
        ),
        ("claim", lambda j, g, now: j.claim_outbox("p", lease=timedelta(minutes=1)), "outbox_pending"),
        ("next due", lambda j, g, now: j.next_outbox_due(), "outbox_pending"),
        ("backlog", lambda j, g, now: j.outbox_backlog(), "outbox_pending"),
        ("runner", lambda j, g, now: g.due(), "generations_due"),
        (
            "picture quota",
            lambda j, g, now: g.recent_for_owner(4, now - timedelta(days=1)),
            "generations_owner_created",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_the_hot_reads_use_their_index(
    pg_db: PostgresDatabase,
    stores: tuple[PostgresStore, PostgresGenerationStore],
    clock: Clock,
    name: str,
    call,
    index: str,
) -> None:
    jobs, generations = stores
    plan = await plan_of(pg_db, lambda: call(jobs, generations, clock()))
    assert index in plan, plan
    assert "Seq Scan" not in plan, plan
