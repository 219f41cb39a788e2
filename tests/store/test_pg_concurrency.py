"""PostgreSQL under concurrency, as several bot processes sharing one database: each process is
a pool of its own. Reports racing on one job keep one event per status and move it only forward;
outbox items are never leased to two processes; a generation is submitted once; two processes
changing one server's settings at once both keep their change."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bot.jobs.generation_model import GenerationState
from bot.jobs.generations import GenerationEvent, plan_generation
from bot.jobs.model import OutboxDraft, OutboxItem
from bot.jobs.states import PROVIDER_PROGRESS, RANK, JobState
from bot.jobs.transitions import plan_transition
from bot.store.pg_database import PostgresDatabase
from bot.store.postgres import PostgresStore
from bot.store.postgres_generations import PostgresGenerationStore
from bot.store.postgres_guild_settings import PostgresGuildSettingsStore
from tests.store.contract.conftest import SUBMIT, accepted, new_generation, new_job, ready_job, webhook
from tests.store.helpers import enqueue, require_generation

PROCESSES = 3


@pytest.fixture
async def pools(pg_url: str) -> AsyncIterator[list[PostgresDatabase]]:
    """Three pools on one migrated schema: three processes."""
    databases = [await PostgresDatabase.open(pg_url, max_size=5) for _ in range(PROCESSES)]
    try:
        await databases[0].migrate()
        yield databases
    finally:
        for database in databases:
            await database.close()


@pytest.mark.parametrize("optimistic_attempts", [2, 0], ids=["guarded", "locked"])
async def test_reports_racing_on_one_job_keep_one_event_per_status_and_only_move_forward(
    pools: list[PostgresDatabase], optimistic_attempts: int
) -> None:
    stores = [PostgresStore(db, optimistic_attempts=optimistic_attempts) for db in pools]
    job = await new_job(stores[0])
    await stores[0].apply_event(job.id, SUBMIT, plan_transition)
    await stores[0].set_card(job.id, 1, 2)
    await stores[0].apply_event(job.id, accepted("RACE"), plan_transition)

    words = [state.value for state in PROVIDER_PROGRESS] * 5 + ["mystery_word"] * 3
    random.Random(11).shuffle(words)
    results = await asyncio.gather(
        *(
            stores[index % PROCESSES].apply_event(job.id, webhook(word), plan_transition)
            for index, word in enumerate(words)
        )
    )

    events = await stores[1].events_for_job(job.id)
    statuses = [event.status for event in events]
    assert len(statuses) == len(set(statuses))  # one event per status
    assert sum(result.event_recorded for result in results) == len(events) - 2  # submit and accepted before
    changed = sorted((r for r in results if r.changed), key=lambda r: RANK[r.after.state])
    # Each change started from the state the previous one left: the writes were serialized.
    assert [r.before.state for r in changed] == [JobState.DEPLOYING_GPU] + [r.after.state for r in changed[:-1]]
    assert len({RANK[r.after.state] for r in changed}) == len(changed)
    final = await stores[2].require_job(job.id)
    assert final.state is JobState.MODEL_READY == changed[-1].after.state
    assert final.finished_at is not None
    assert all(not r.plan.write for r in results if r.before.state is JobState.MODEL_READY)  # late reports refused
    outbox = await pools[0].fetch("SELECT kind, dedupe_key FROM outbox ORDER BY id")
    assert [tuple(row) for row in outbox] == [("card", f"card:{job.id}"), ("dm", f"dm:{job.id}:model_ready")]
    assert (await stores[0].state_counts())["jobs"]["model_ready"] == 1
    assert sum((await stores[0].state_counts())["jobs"].values()) == 1


async def test_concurrent_jobs_keep_the_state_counts_exact(pools: list[PostgresDatabase]) -> None:
    """Many jobs moving at once through the same states: the trigger-kept counters stay exact
    (and the fixed locking order of the counters lets no two changes deadlock)."""
    stores = [PostgresStore(db) for db in pools]
    jobs = [await new_job(stores[0], owner=index) for index in range(30)]

    async def lifecycle(index: int) -> None:
        store = stores[index % PROCESSES]
        job_id = jobs[index].id
        await store.apply_event(job_id, SUBMIT, plan_transition)
        await store.apply_event(job_id, accepted(f"T{index}"), plan_transition)
        for state in PROVIDER_PROGRESS[1:]:
            await store.apply_event(job_id, webhook(state.value), plan_transition)

    await asyncio.gather(*(lifecycle(index) for index in range(len(jobs))))
    counts = await stores[0].state_counts()
    assert {state: n for state, n in counts["jobs"].items() if n} == {"model_ready": len(jobs)}


async def test_outbox_items_are_never_leased_to_two_processes(pools: list[PostgresDatabase]) -> None:
    stores = [PostgresStore(db) for db in pools]
    job = await new_job(stores[0])
    for index in range(120):
        await enqueue(stores[0], job.id, OutboxDraft("dm", f"dm:{index}", {"i": index}))

    claims: dict[str, list[OutboxItem]] = {}

    async def deliverer(name: str, store: PostgresStore) -> None:
        while batch := await store.claim_outbox(name, lease=timedelta(minutes=1), limit=7):
            claims.setdefault(name, []).extend(batch)
            for item in batch:
                await store.mark_delivered(item)

    await asyncio.gather(*(deliverer(f"p{index}", stores[index % PROCESSES]) for index in range(9)))
    claimed = [item.id for items in claims.values() for item in items]
    assert len(claimed) == len(set(claimed)) == 120
    assert len(claims) > 1  # the work was shared
    assert await pools[0].fetchval("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL") == 0


async def test_a_generation_is_submitted_by_one_process_only(pools: list[PostgresDatabase]) -> None:
    jobs = PostgresStore(pools[0])
    generations = [PostgresGenerationStore(db) for db in pools]
    model = await ready_job(jobs)
    created = await generations[0].create(new_generation(model))

    def submit(g):
        return plan_generation(g, GenerationEvent("submit"), jobs.now())

    changes = await asyncio.gather(*(generations[i % PROCESSES].apply(created.id, submit) for i in range(12)))
    assert sum(change.changed for change in changes) == 1
    assert (await require_generation(generations[1], created.id)).state is GenerationState.SUBMITTING
    assert (await jobs.state_counts())["generations"] == {"queued": 0, "submitting": 1}


async def test_two_processes_changing_one_servers_settings_at_once_keep_both_changes(
    pools: list[PostgresDatabase],
) -> None:
    first, second = PostgresGuildSettingsStore(pools[0]), PostgresGuildSettingsStore(pools[1])
    guilds = [2**60 + n for n in range(20)]
    for guild in guilds[10:]:  # half of them exist already: the race is on reading the row, not making it
        await first.update_guild_overrides(guild, {"existing": True}, changed_by=1)

    await asyncio.gather(
        *(
            update
            for guild in guilds
            for update in (
                first.update_guild_overrides(guild, {"max_active": 3}, changed_by=1),
                second.update_guild_overrides(guild, {"card_channel": guild + 1}, changed_by=2),
            )
        )
    )

    for guild in guilds:
        existing = {"existing": True} if guild in guilds[10:] else {}
        assert await second.guild_overrides(guild) == {**existing, "max_active": 3, "card_channel": guild + 1}
        changes = await first.guild_setting_changes(guild)
        assert sorted((c.key, c.changed_by) for c in changes[:2]) == [("card_channel", 2), ("max_active", 1)]
        assert len(changes) == 2 + len(existing)
