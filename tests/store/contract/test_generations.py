"""GenerationStore contract: generations, their pictures, and `apply` (state, pictures and the
result's outbox item in one write). Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from bot.jobs.generation_model import (
    Generation,
    GenerationNotFound,
    GenerationPlan,
    GenerationPlanner,
    GenerationState,
    Picture,
    StoredPicture,
    result_draft,
)
from bot.jobs.generations import GenerationEvent, plan_generation
from bot.jobs.model import JobNotFound, OutboxDraft
from tests.store.contract.conftest import ALL_TABLES, Harness, new_generation, ready_job
from tests.store.helpers import due_outbox, require_generation

PICTURES = (Picture(b"\x89PNG one", "image/png", False), Picture(b"\xff\xd8 two", "image/jpeg", True))


def step(harness: Harness, kind: str, **fields: Any) -> GenerationPlanner:
    """The domain's plan for `kind`, made at the harness's time when the store calls it."""
    return lambda g: plan_generation(g, GenerationEvent(kind, **fields), harness.clock())


async def test_create_and_read_a_generation(harness: Harness) -> None:
    job = await ready_job(harness.jobs)
    new = new_generation(job, seed=2**40)
    created = await harness.generations.create(new)
    assert created.state is GenerationState.QUEUED
    assert created.created_at == created.updated_at == created.next_check_at == harness.clock()
    assert created.submitted_at is None and created.finished_at is None and created.request_id is None
    for name in type(new).__slots__:
        assert getattr(created, name) == getattr(new, name), name
    assert await harness.generations.get(created.id) == created
    assert await harness.generations.get(created.id + 1) is None
    assert await harness.generations.sample_set(job.id) is None
    with pytest.raises(JobNotFound):
        await harness.generations.create(new_generation(dataclasses.replace(job, id=404)))


async def test_one_sample_set_per_job(harness: Harness) -> None:
    job = await ready_job(harness.jobs)
    first = await harness.generations.create(new_generation(job, kind="sample"))
    again = await harness.generations.create(new_generation(job, kind="sample", seed=99))
    assert again == first
    assert await harness.generations.sample_set(job.id) == first
    await harness.generations.create(new_generation(job))  # imagine generations are not limited
    assert await harness.count("generations") == 2


async def test_a_schema_violation_is_not_mistaken_for_the_sample_set(harness: Harness) -> None:
    job = await ready_job(harness.jobs)
    with pytest.raises(harness.integrity_error):
        await harness.generations.create(new_generation(job, samples=9))  # CHECK samples BETWEEN 1 AND 4


async def test_apply_moves_state_stores_pictures_and_queues_the_result_once(harness: Harness) -> None:
    gens, clock = harness.generations, harness.clock
    job = await ready_job(harness.jobs)
    created = await gens.create(new_generation(job))
    clock.advance(3)
    submitted = await gens.apply(created.id, step(harness, "submit"))
    assert submitted.changed and submitted.after.state is GenerationState.SUBMITTING
    assert submitted.after.submitted_at == clock() == submitted.after.updated_at
    later = clock() + timedelta(seconds=4)
    processing = await gens.apply(created.id, step(harness, "processing", request_id="R77", next_check_at=later))
    assert processing.after.request_id == "R77" and processing.after.next_check_at == later
    clock.advance(5)
    ready = await gens.apply(created.id, step(harness, "ready", pictures=PICTURES))
    assert ready.after.state is GenerationState.READY
    assert ready.after.finished_at == clock()
    assert ready.after.request_id == "R77"  # kept: the plan did not name it
    assert await gens.pictures(created.id) == [
        StoredPicture(0, b"\x89PNG one", "image/png", False, None),
        StoredPicture(1, b"\xff\xd8 two", "image/jpeg", True, None),
    ]
    items = await due_outbox(harness.jobs)
    assert [(i.kind, i.dedupe_key, dict(i.payload), i.job_id) for i in items if i.kind == "generation"] == [
        ("generation", f"generation:{created.id}", {"generation": created.id}, job.id)
    ]
    refused = await gens.apply(created.id, step(harness, "ready", pictures=PICTURES))  # not allowed from ready
    assert not refused.changed
    assert len(await gens.pictures(created.id)) == 2


async def test_a_plan_may_set_and_clear_columns(harness: Harness) -> None:
    gens, clock = harness.generations, harness.clock
    job = await ready_job(harness.jobs)
    created = await gens.create(new_generation(job))
    moment = clock() + timedelta(hours=1)
    change = await gens.apply(
        created.id,
        lambda g: GenerationPlan(
            None, "set", {"attempts": 3, "last_error": "full", "reply_to_message_id": 2**62, "finished_at": moment}
        ),
    )
    assert not change.changed
    after = change.after
    assert (after.attempts, after.last_error, after.reply_to_message_id, after.finished_at) == (
        3,
        "full",
        2**62,
        moment,
    )
    cleared = await gens.apply(created.id, lambda g: GenerationPlan(None, "clear", {"last_error": None}))
    assert cleared.after.last_error is None and cleared.after.attempts == 3
    await gens.set_reply_to(created.id, 5)
    assert (await require_generation(gens, created.id)).reply_to_message_id == 5


async def test_apply_is_all_or_nothing(harness: Harness) -> None:
    gens = harness.generations
    job = await ready_job(harness.jobs)
    created = await gens.create(new_generation(job))
    before = await harness.counts(*ALL_TABLES)

    def bad_outbox(g: Generation) -> GenerationPlan:
        plan = plan_generation(g, GenerationEvent("submit"), harness.clock())
        return GenerationPlan(plan.new_state, plan.reason, plan.updates, (OutboxDraft("sms", "x"),), PICTURES)

    def bad_column(g: Generation) -> GenerationPlan:
        return GenerationPlan(GenerationState.FAILED, "x", {"owner_id": 5})

    def explodes(g: Generation) -> GenerationPlan:
        raise RuntimeError("planner crashed")

    with pytest.raises(harness.integrity_error):
        await gens.apply(created.id, bad_outbox)
    with pytest.raises(ValueError, match="owner_id"):
        await gens.apply(created.id, bad_column)
    with pytest.raises(RuntimeError):
        await gens.apply(created.id, explodes)
    with pytest.raises(GenerationNotFound):
        await gens.apply(created.id + 1, step(harness, "submit"))
    assert await harness.counts(*ALL_TABLES) == before
    assert await require_generation(gens, created.id) == created


async def test_due_next_due_in_flight_and_ids_in_state(harness: Harness) -> None:
    gens, clock = harness.generations, harness.clock
    job = await ready_job(harness.jobs)
    queued = await gens.create(new_generation(job))
    clock.advance(1)
    processing = await gens.create(new_generation(job))
    await gens.apply(processing.id, step(harness, "submit"))
    await gens.apply(
        processing.id, step(harness, "processing", request_id="R", next_check_at=clock() + timedelta(seconds=9))
    )
    failed = await gens.create(new_generation(job))
    await gens.apply(failed.id, step(harness, "fail", detail="no"))
    submitting = await gens.create(new_generation(job))
    await gens.apply(submitting.id, step(harness, "submit"))

    assert [g.id for g in await gens.due()] == [queued.id]  # processing is not due for 9 s
    assert await gens.next_due() == queued.next_check_at
    assert await gens.next_due(include_queued=False) == clock() + timedelta(seconds=9)
    clock.advance(9)
    assert [g.id for g in await gens.due()] == [queued.id, processing.id]  # oldest check first
    assert [g.id for g in await gens.due(limit=1)] == [queued.id]
    assert await gens.in_flight() == 2
    assert await gens.ids_in_state(GenerationState.SUBMITTING) == [submitting.id]
    assert await gens.ids_in_state(GenerationState.FAILED) == [failed.id]
    assert await gens.ids_in_state(GenerationState.READY) == []


async def test_recent_for_owner_counts_what_may_cost_credits(harness: Harness) -> None:
    gens, clock = harness.generations, harness.clock
    job = await ready_job(harness.jobs, owner=1)
    other = await ready_job(harness.jobs, owner=2, training_id="OTHER")
    start = clock()
    await gens.create(new_generation(job, samples=2))
    clock.advance(60)
    failed = await gens.create(new_generation(job, samples=4))
    await gens.apply(failed.id, step(harness, "fail"))
    await gens.create(new_generation(job, kind="sample", samples=3))  # samples are not the member's quota
    await gens.create(new_generation(job, samples=3))
    await gens.create(new_generation(other, samples=1))
    assert await gens.recent_for_owner(1, start) == [(start, 2), (start + timedelta(seconds=60), 3)]
    assert await gens.recent_for_owner(1, start + timedelta(seconds=1)) == [(start + timedelta(seconds=60), 3)]


async def test_pictures_by_job_and_pictures_posted(harness: Harness) -> None:
    gens = harness.generations
    job = await ready_job(harness.jobs, owner=1)
    other = await ready_job(harness.jobs, owner=2, training_id="OTHER")
    made = await gens.create(new_generation(job))
    await gens.apply(made.id, step(harness, "submit"))
    await gens.apply(made.id, step(harness, "ready", pictures=(*PICTURES, Picture(b"three", "image/png", False))))
    assert await gens.pictures_by_job([job.id, other.id]) == {job.id: 3}
    assert await gens.pictures_by_job([]) == {}

    await gens.pictures_posted(made.id, ["https://cdn/0.png", None])
    assert await gens.pictures(made.id) == [
        StoredPicture(0, None, "image/png", False, "https://cdn/0.png"),
        StoredPicture(1, None, "image/jpeg", True, None),
        StoredPicture(2, None, "image/png", False, None),  # past the links given: bytes dropped all the same
    ]


async def test_the_result_draft_is_written_once(harness: Harness) -> None:
    gens = harness.generations
    job = await ready_job(harness.jobs)
    made = await gens.create(new_generation(job))
    await gens.apply(made.id, lambda g: GenerationPlan(None, "a", outbox=(result_draft(made.id),)))
    await gens.apply(made.id, lambda g: GenerationPlan(None, "b", outbox=(result_draft(made.id),)))
    assert await harness.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'generation'") == 1
