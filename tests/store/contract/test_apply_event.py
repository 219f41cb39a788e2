"""JobStore contract, the one state-change path: the event row, the job update and the outbox
items are written together or not at all; a repeated status is kept once; a refused event writes
nothing. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from bot.jobs.model import Job, JobNotFound, OutboxDraft, TransitionPlan
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from tests.store.contract.conftest import ALL_TABLES, SUBMIT, Harness, accepted, new_job, submitted_job, webhook
from tests.store.helpers import due_outbox, pending_outbox_count


async def test_apply_event_writes_state_event_and_outbox_together(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    clock.advance(30)
    result = await store.apply_event(job.id, accepted("TID1"), plan_transition, payload='{"raw": true}')
    assert result.before == job
    assert result.after.state is JobState.DEPLOYING_GPU
    assert result.after.training_id == "TID1"
    assert result.after.provider_status == "deploying_gpu"
    assert result.after.progressed_at == clock() == result.after.updated_at
    assert result.after == await store.require_job(job.id)
    assert result.event_recorded and result.changed
    events = await store.events_for_job(job.id)
    assert [(e.status, e.source, e.applied, e.payload) for e in events] == [
        ("submitting", EventSource.USER, True, None),
        ("deploying_gpu", EventSource.SYSTEM, True, '{"raw": true}'),
    ]
    assert events[1].received_at == clock()
    assert events[0].id < events[1].id
    due = await due_outbox(store)
    assert [(item.kind, item.dedupe_key, dict(item.payload), item.job_id) for item in due] == [
        ("card", f"card:{job.id}", {"reason": "deploying_gpu"}, job.id)
    ]


async def test_the_submit_transition_stamps_submitted_at_with_the_transaction_time(harness: Harness) -> None:
    job = await new_job(harness.jobs)
    harness.clock.advance(42)
    result = await harness.jobs.apply_event(job.id, SUBMIT, plan_transition)
    assert result.after.state is JobState.SUBMITTING
    assert result.after.submitted_at == harness.clock() == result.after.progressed_at
    assert result.after.created_at == job.created_at


async def test_a_plan_may_set_image_urls_and_the_eta(harness: Harness) -> None:
    job = await submitted_job(harness.jobs)

    def planner(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        updates = {**plan.updates, "image_urls": ["https://cdn/a.png"], "eta_text": "soon"}
        return TransitionPlan(plan.new_state, plan.recorded_status, plan.reason, updates, plan.outbox)

    result = await harness.jobs.apply_event(job.id, accepted("T"), planner)
    assert result.after.image_urls == ("https://cdn/a.png",)
    assert result.after.eta_text == "soon"
    assert result.after.last_error is None  # a column the plan does not name is left alone


async def test_a_duplicate_status_is_recorded_once(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("T"), plan_transition)
    first = await store.apply_event(job.id, webhook("training_started"), plan_transition)
    harness.clock.advance(1)
    again = await store.apply_event(job.id, webhook("training_started"), plan_transition)
    assert first.event_recorded and first.changed
    assert not again.event_recorded and not again.changed
    assert again.after.state is JobState.TRAINING_STARTED
    assert again.after.updated_at == harness.clock()  # the report was seen, though it changed nothing
    assert [e.status for e in await store.events_for_job(job.id)] == ["submitting", "deploying_gpu", "training_started"]


async def test_a_stale_status_is_recorded_but_does_not_move_the_job(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("T"), plan_transition)
    await store.apply_event(job.id, webhook("training_success"), plan_transition)
    stale = await store.apply_event(job.id, webhook("training_started"), plan_transition)
    assert stale.event_recorded and not stale.changed
    assert stale.after.state is JobState.TRAINING_SUCCESS
    events = await store.events_for_job(job.id)
    assert [(e.status, e.applied) for e in events][-1] == ("training_started", False)


async def test_terminal_state_sets_finished_at_and_last_error(harness: Harness) -> None:
    job = await submitted_job(harness.jobs)
    harness.clock.advance(60)
    result = await harness.jobs.apply_event(
        job.id, Event(Action.FAIL, EventSource.SYSTEM, detail="boom"), plan_transition
    )
    assert result.after.state is JobState.FAILED
    assert result.after.finished_at == harness.clock()
    assert result.after.last_error == "boom"
    keys = {item.dedupe_key for item in await due_outbox(harness.jobs)}
    assert keys == {f"card:{job.id}", f"dm:{job.id}:failed"}


async def test_apply_event_for_a_missing_job(harness: Harness) -> None:
    with pytest.raises(JobNotFound):
        await harness.jobs.apply_event(404, SUBMIT, plan_transition)
    assert await harness.count("job_events") == 0


async def test_a_crash_inside_apply_event_writes_nothing(harness: Harness) -> None:
    """A planner raising, an outbox row the schema refuses (after the event and the job update
    were written in the same transaction), and a plan naming a forbidden column: nothing stays."""
    store = harness.jobs
    job = await submitted_job(store)
    before = await harness.counts(*ALL_TABLES)
    counts = await store.state_counts()

    def explodes(current: Job, event: Event) -> TransitionPlan:
        raise RuntimeError("planner crashed")

    def bad_outbox(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        return TransitionPlan(
            plan.new_state, plan.recorded_status, plan.reason, plan.updates, (*plan.outbox, OutboxDraft("sms", "x"))
        )

    def bad_column(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        return TransitionPlan(plan.new_state, plan.recorded_status, plan.reason, {"owner_id": 2})

    harness.clock.advance(5)
    with pytest.raises(RuntimeError):
        await store.apply_event(job.id, accepted("T"), explodes)
    with pytest.raises(harness.integrity_error):
        await store.apply_event(job.id, accepted("T"), bad_outbox)
    with pytest.raises(ValueError, match="owner_id"):
        await store.apply_event(job.id, accepted("T"), bad_column)

    assert await harness.counts(*ALL_TABLES) == before
    assert await store.require_job(job.id) == job
    assert await pending_outbox_count(store) == 0
    assert await store.state_counts() == counts
    # and the store still works
    assert (await store.apply_event(job.id, accepted("T"), plan_transition)).after.state is JobState.DEPLOYING_GPU


async def test_a_provider_report_for_a_finished_job_writes_nothing(harness: Harness) -> None:
    """The terminal check is made on the row as it is when the write applies, so a webhook racing
    model_ready cannot slip an event row in after the job finished."""
    store = harness.jobs
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("RACE"), plan_transition)
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    before = await harness.counts(*ALL_TABLES)
    finished = await store.require_job(job.id)
    harness.clock.advance(10)
    result = await store.apply_event(job.id, webhook("training_started"), plan_transition)
    assert not result.plan.write and not result.event_recorded and not result.changed
    assert result.before == result.after == finished
    assert await harness.counts(*ALL_TABLES) == before
    assert (await store.require_job(job.id)).updated_at == finished.updated_at


async def test_a_report_about_another_training_writes_nothing(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("MINE"), plan_transition)
    before = await harness.counts(*ALL_TABLES)
    forged = Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="model_ready", training_id="OTHER")
    result = await store.apply_event(job.id, forged, plan_transition)
    assert not result.plan.write
    assert await harness.counts(*ALL_TABLES) == before
    assert (await store.require_job(job.id)).state is JobState.DEPLOYING_GPU


async def test_the_planner_sees_the_row_as_it_is_when_the_change_applies(harness: Harness) -> None:
    """A change made between two state changes (here a card posted) is what the next plan sees."""
    store = harness.jobs
    job = await new_job(store)
    await store.apply_event(job.id, SUBMIT, plan_transition)
    seen: list[Job] = []

    def recording(current: Job, event: Event) -> TransitionPlan:
        seen.append(current)
        return plan_transition(current, event)

    no_card = await store.apply_event(job.id, accepted("T"), recording)
    assert no_card.plan.outbox == ()  # no card yet: nothing to edit
    await store.set_card(job.id, 1, 2)
    with_card = await store.apply_event(job.id, webhook("training_started"), recording)
    assert seen[-1].card_message_id == 2
    assert [d.kind for d in with_card.plan.outbox] == ["card"]
    assert await store.pending_card_item(job.id) is not None
