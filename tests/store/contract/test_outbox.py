"""JobStore contract, the outbox: at most once per key, card refreshes coalesced and re-armed,
retries and give-ups, and leases (one deliverer at a time, taken over when a lease runs out).
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from bot.jobs.model import OutboxDraft
from bot.jobs.states import JobState
from bot.jobs.transitions import card_draft, dm_draft, plan_transition
from tests.store.contract.conftest import Harness, accepted, submitted_job, webhook
from tests.store.helpers import due_outbox, enqueue, pending_outbox_count

LEASE = timedelta(seconds=60)


async def test_a_dm_is_enqueued_once_per_key(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", f"dm:{job.id}:model_ready", {"n": 1}))
    await enqueue(store, job.id, OutboxDraft("dm", f"dm:{job.id}:model_ready", {"n": 2}))
    due = await due_outbox(store)
    assert [dict(item.payload) for item in due] == [{"n": 1}]
    await store.mark_delivered(due[0])
    assert await store.outbox_delivered(f"dm:{job.id}:model_ready") is True
    await enqueue(store, job.id, OutboxDraft("dm", f"dm:{job.id}:model_ready", {"n": 3}))
    assert await pending_outbox_count(store) == 0  # a delivered DM is never sent again
    assert await store.outbox_delivered("dm:none") is None


async def test_an_outbox_item_without_a_job(harness: Harness) -> None:
    await enqueue(harness.jobs, None, OutboxDraft("dm", "dm:user:5:hello", {"user": 5, "nested": {"z": [1]}}))
    (item,) = await due_outbox(harness.jobs)
    assert item.job_id is None
    assert dict(item.payload) == {"user": 5, "nested": {"z": [1]}}
    assert item.attempts == 0 and item.next_attempt_at == harness.clock()


async def test_two_card_drafts_for_one_job_coalesce_into_one_pending_row(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "deploying_gpu"))
    await enqueue(store, job.id, card_draft(job.id, "training_started"))
    assert await harness.count("outbox") == 1
    (item,) = await due_outbox(store)
    assert item.dedupe_key == f"card:{job.id}"
    assert dict(item.payload) == {"reason": "training_started"}
    assert await store.pending_card_item(job.id) == item
    assert await store.pending_card_item(job.id + 1) is None


async def test_a_card_rearmed_while_in_flight_is_not_lost(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "deploying_gpu"))
    (in_flight,) = await due_outbox(store)
    await enqueue(store, job.id, card_draft(job.id, "training_started"))  # arrives while the edit is being sent
    await store.mark_delivered(in_flight)
    (pending,) = await due_outbox(store)
    assert pending.id == in_flight.id
    assert dict(pending.payload) == {"reason": "training_started"}
    await store.mark_delivered(pending)
    assert await pending_outbox_count(store) == 0

    clock.advance(5)
    await enqueue(store, job.id, card_draft(job.id, "training_success"))  # re-arming a delivered card
    (again,) = await due_outbox(store)
    assert again.next_attempt_at == clock()
    assert dict(again.payload) == {"reason": "training_success"}


async def test_rearming_a_failed_card_resets_its_attempts(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "a"))
    (item,) = await due_outbox(store)
    await store.mark_failed(item, "HTTP 500", timedelta(0))
    await enqueue(store, job.id, card_draft(job.id, "b"))
    (item,) = await due_outbox(store)
    assert item.attempts == 0 and dict(item.payload) == {"reason": "b"}


async def test_rearming_a_postponed_card_keeps_its_time(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "a"))
    (item,) = await due_outbox(store)
    later = clock() + timedelta(seconds=3)
    await store.postpone(item, later)
    await enqueue(store, job.id, card_draft(job.id, "b"))
    assert await due_outbox(store) == []  # coalesced, still waiting for the edit interval
    assert await store.next_outbox_due() == later
    clock.advance(3)
    (item,) = await due_outbox(store)
    assert dict(item.payload) == {"reason": "b"}
    assert item.attempts == 0


async def test_transitions_coalesce_their_card_refreshes_and_dm_once(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("T"), plan_transition)
    await store.apply_event(job.id, webhook("training_started"), plan_transition)
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    items = await due_outbox(store)
    assert sorted((i.kind, i.dedupe_key, dict(i.payload)) for i in items) == [
        ("card", f"card:{job.id}", {"reason": "model_ready"}),
        ("dm", f"dm:{job.id}:model_ready", {"state": "model_ready"}),
    ]


async def test_postpone_mark_failed_and_give_up(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "dm:1", {}))
    (item,) = await due_outbox(store)
    assert await store.next_outbox_due() == clock()

    await store.postpone(item, clock() + timedelta(seconds=30))
    assert await due_outbox(store) == []
    clock.advance(30)
    (item,) = await due_outbox(store)
    assert item.attempts == 0  # postponing is not an attempt

    await store.mark_failed(item, "HTTP 503 " + "x" * 1000, timedelta(minutes=1))
    assert await due_outbox(store) == []
    clock.advance(minutes=1)
    (item,) = await due_outbox(store)
    assert item.attempts == 1
    error = await harness.scalar("SELECT last_error FROM outbox WHERE id = ?", item.id)
    assert error.startswith("HTTP 503") and len(error) == 500

    await store.mark_failed(item, "Forbidden", None)  # give up
    assert await due_outbox(store) == []
    assert await pending_outbox_count(store) == 0
    row = await harness.rows("SELECT attempts, last_error, delivered_at IS NOT NULL FROM outbox WHERE id = ?", item.id)
    assert [(r[0], r[1], bool(r[2])) for r in row] == [(2, "Forbidden", True)]
    assert await store.next_outbox_due() is None
    assert await store.outbox_delivered("dm:1") is True


async def test_postponing_a_delivered_item_changes_nothing(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "dm:done", {}))
    (item,) = await due_outbox(store)
    await store.mark_delivered(item)
    await store.postpone(item, clock() + timedelta(hours=1))
    assert await store.next_outbox_due() is None
    assert await store.outbox_delivered("dm:done") is True


async def test_due_outbox_order_and_limit(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "first", {}))
    clock.advance(1)
    await enqueue(store, job.id, OutboxDraft("dm", "second", {}))
    await enqueue(store, job.id, OutboxDraft("dm", "third", {}))
    assert [item.dedupe_key for item in await due_outbox(store)] == ["first", "second", "third"]
    assert [item.dedupe_key for item in await due_outbox(store, limit=1)] == ["first"]
    assert await pending_outbox_count(store) == 3


async def test_retry_outbox_now_makes_every_pending_item_due(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "waiting", {}))
    await enqueue(store, job.id, OutboxDraft("dm", "done", {}))
    waiting, done = await due_outbox(store)
    await store.mark_failed(waiting, "Discord is down", timedelta(minutes=30))
    await store.mark_delivered(done)
    assert await due_outbox(store) == []

    assert await store.retry_outbox_now() == 1
    (item,) = await due_outbox(store)
    assert item.dedupe_key == "waiting"
    assert item.attempts == 1  # the count of failed attempts is kept
    assert await store.retry_outbox_now() == 0


async def test_settle_outbox_key_marks_an_item_delivered_by_another_message(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("generation", "generation:9", {"generation": 9}))
    assert await store.outbox_delivered("generation:9") is False
    await store.settle_outbox_key("generation:9")
    await store.settle_outbox_key("generation:missing")
    assert await store.outbox_delivered("generation:9") is True
    assert await due_outbox(store) == []


async def test_outbox_backlog_counts_pending_items_and_the_oldest_age(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    assert await store.outbox_backlog() == (0, 0.0)
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "old", {}))
    clock.advance(40)
    await enqueue(store, job.id, OutboxDraft("dm", "new", {}))
    clock.advance(2)
    assert await store.outbox_backlog() == (2, 42.0)
    for item in await due_outbox(store):
        await store.mark_delivered(item)
    assert await store.outbox_backlog() == (0, 0.0)


# -- leases ---------------------------------------------------------------------------------------


async def pending_dms(harness: Harness, count: int) -> list[int]:
    job = await submitted_job(harness.jobs)
    for index in range(count):
        await enqueue(harness.jobs, job.id, OutboxDraft("dm", f"dm:{index}", {"i": index}))
        harness.clock.advance(0.001)
    return [item.id for item in await due_outbox(harness.jobs, limit=count)]


async def test_a_claimed_item_is_not_claimed_again_until_its_lease_runs_out(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    [item_id] = await pending_dms(harness, 1)
    first = await store.claim_outbox("a", lease=LEASE)
    assert [item.id for item in first] == [item_id]
    assert await store.claim_outbox("b", lease=LEASE) == []
    assert await store.next_outbox_due() == clock() + LEASE  # due again when the lease ends
    clock.advance(LEASE.total_seconds() - 1)
    assert await store.claim_outbox("b", lease=LEASE) == []
    clock.advance(1)
    again = await store.claim_outbox("b", lease=LEASE)  # "a" died: "b" takes it over
    assert [item.id for item in again] == [item_id]
    assert await harness.scalar("SELECT claimed_by FROM outbox WHERE id = ?", item_id) == "b"


async def test_an_owner_may_claim_again_what_it_holds(harness: Harness) -> None:
    """A process that keeps its name across a restart takes its own items back at once."""
    store = harness.jobs
    [item_id] = await pending_dms(harness, 1)
    [first] = await store.claim_outbox("a", lease=LEASE)
    harness.clock.advance(1)
    assert await store.claim_outbox("b", lease=LEASE) == []
    [again] = await store.claim_outbox("a", lease=LEASE)
    assert again.id == first.id == item_id
    harness.clock.advance(LEASE.total_seconds() - 1)
    assert await store.claim_outbox("b", lease=LEASE) == []  # the lease was renewed by the second claim
    assert await store.next_outbox_due() == harness.clock() + timedelta(seconds=1)


async def test_claims_are_oldest_first_limited_and_never_shared(harness: Harness) -> None:
    store = harness.jobs
    ids = await pending_dms(harness, 5)
    a = await store.claim_outbox("a", lease=LEASE, limit=2)
    b = await store.claim_outbox("b", lease=LEASE, limit=2)
    c = await store.claim_outbox("c", lease=LEASE, limit=2)
    assert [item.id for item in a] == ids[:2]
    assert [item.id for item in b] == ids[2:4]
    assert [item.id for item in c] == ids[4:]
    assert await store.claim_outbox("d", lease=LEASE) == []


async def test_delivering_failing_or_postponing_ends_the_lease(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    await pending_dms(harness, 2)
    first, second = await store.claim_outbox("a", lease=LEASE)
    await store.postpone(first, clock() + timedelta(seconds=5))
    await store.mark_failed(second, "HTTP 500", timedelta(seconds=5))
    assert await store.claim_outbox("b", lease=LEASE) == []
    assert await store.next_outbox_due() == clock() + timedelta(seconds=5)  # not the lease's end
    clock.advance(5)
    claimed = await store.claim_outbox("b", lease=LEASE)
    assert {item.id for item in claimed} == {first.id, second.id}
    for item in claimed:
        await store.mark_delivered(item)
    clock.advance(LEASE.total_seconds() * 2)
    assert await store.claim_outbox("c", lease=LEASE) == []  # delivered items are never claimed again
    assert await store.next_outbox_due() is None
    assert await harness.scalar("SELECT COUNT(*) FROM outbox WHERE claimed_by IS NOT NULL") == 0


async def test_giving_up_ends_the_lease_and_the_item(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    await pending_dms(harness, 1)
    [item] = await store.claim_outbox("a", lease=LEASE)
    await store.mark_failed(item, "Forbidden", None)
    clock.advance(LEASE.total_seconds() * 2)
    assert await store.claim_outbox("b", lease=LEASE) == []


async def test_an_item_not_yet_due_is_not_claimed(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await submitted_job(store)
    await enqueue(store, job.id, dm_draft(job.id, JobState.FAILED))
    [item] = await due_outbox(store)
    await store.postpone(item, clock() + timedelta(seconds=10))
    assert await store.claim_outbox("a", lease=LEASE) == []
    clock.advance(10)
    assert [i.id for i in await store.claim_outbox("a", lease=LEASE)] == [item.id]
