"""The reconciler: polls overdue jobs through the same record path, fails stalled ones, survives provider errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from bot.jobs.reconciler import Reconciler
from bot.jobs.service import JobService
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.store import Job, Store

TID = "F5jvdzGnYi"
INTERVAL, DEADLINE, PREVIEW_TIMEOUT = 300, 3600, 600
LOG = " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done : ETA : 15 minutes"


class StatusProvider:
    """Answers `fine_tune_status/{id}` with `answer`; records the ids asked about."""

    def __init__(self, answer: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.startswith("/api/v3/fine_tune_status/"), request.url.path
        self.asked.append(request.url.path.rsplit("/", 1)[1])
        return self.answer(request) if callable(self.answer) else self.answer


def status_answer(word: str, data: str = LOG) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "messege": word, "data": data})


@pytest.fixture
def build(store: Store, settings, make_provider):
    def make(answer=None) -> tuple[Reconciler, JobService, StatusProvider]:
        provider = StatusProvider(answer or status_answer("training_started"))
        service = JobService(store, make_provider(provider), settings)
        reconciler = Reconciler(
            store, service, interval=INTERVAL, stall_deadline=DEADLINE, preview_timeout=PREVIEW_TIMEOUT
        )
        return reconciler, service, provider

    return make


async def running_job(store: Store, training_id: str | None = TID, owner: int = 1) -> Job:
    job = await store.create_job(owner_id=owner, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    await store.set_card(job.id, 2, 9000 + job.id)  # the Start flow posts the card next
    if training_id is None:
        return (await store.apply_event(job.id, Event(Action.UNCERTAIN, EventSource.SYSTEM), plan_transition)).after
    event = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)
    return (await store.apply_event(job.id, event, plan_transition)).after


async def outbox_keys(store: Store) -> list[str]:
    return [row[0] for row in await store.db.fetchall("SELECT dedupe_key FROM outbox ORDER BY id")]


async def test_an_overdue_job_is_polled_and_advanced_through_record(build, store: Store, clock) -> None:
    reconciler, _, provider = build(status_answer("training_started"))
    job = await running_job(store)
    clock.advance(INTERVAL - 1)
    assert await reconciler.run_once() == 0  # not overdue yet
    assert provider.asked == []

    clock.advance(2)
    assert await reconciler.run_once() == 1
    assert provider.asked == [TID]
    after = await store.require_job(job.id)
    assert after.state is JobState.TRAINING_STARTED
    assert after.provider_status == "training_started"
    assert after.eta_text == "15 minutes"
    assert after.updated_at == clock()
    event = (await store.events_for_job(job.id))[-1]
    assert (event.status, event.source, event.applied) == ("training_started", EventSource.POLL, True)
    assert json.loads(event.payload)["messege"] == "training_started"
    assert "key" not in json.loads(event.payload)
    assert f"card:{job.id}" in await outbox_keys(store)
    assert await reconciler.run_once() == 0  # just looked at: not polled again this interval


async def test_a_poll_to_model_ready_dms_once_like_a_webhook(build, store: Store, clock) -> None:
    reconciler, _, _ = build(status_answer("model_ready"))
    job = await running_job(store)
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 1
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 0  # terminal now: not scanned again
    assert (await store.require_job(job.id)).state is JobState.MODEL_READY
    assert [k for k in await outbox_keys(store) if k.startswith("dm:")] == [f"dm:{job.id}:model_ready"]


async def test_a_stalled_job_fails_and_its_owner_is_told(build, store: Store, clock) -> None:
    reconciler, _, provider = build()
    job = await running_job(store)
    clock.advance(DEADLINE - 10)
    await store.touch(job.id)  # polled recently but never progressed
    clock.advance(INTERVAL + 10)

    assert await reconciler.run_once() == 1
    after = await store.require_job(job.id)
    assert after.state is JobState.FAILED
    assert after.last_error == "Stalled: no progress from the provider for 1 hours."
    assert provider.asked == []
    assert f"dm:{job.id}:failed" in await outbox_keys(store)
    event = (await store.events_for_job(job.id))[-1]
    assert (event.status, event.source) == ("failed", EventSource.SYSTEM)


async def test_progress_resets_the_stall_clock(build, store: Store, clock) -> None:
    reconciler, service, _ = build(status_answer("training_started"))
    job = await running_job(store)
    clock.advance(DEADLINE - 100)
    await service.record(job.id, Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="training_started"))
    clock.advance(INTERVAL + 1)  # past the deadline counted from submission, not from the progress
    await reconciler.run_once()
    assert (await store.require_job(job.id)).state is JobState.TRAINING_STARTED


async def test_an_unknown_status_word_is_recorded_and_shown(build, store: Store, clock) -> None:
    reconciler, _, _ = build(status_answer("Queued_On_New_Cluster", data=""))
    job = await running_job(store)
    outbox_before = await store.pending_outbox_count()
    async with store.db.transaction() as conn:  # pretend the first card was already delivered
        await conn.execute("UPDATE outbox SET delivered_at = created_at")
    assert outbox_before == 1

    clock.advance(1)
    await reconciler.run_once(everything=True)
    after = await store.require_job(job.id)
    assert after.state is JobState.DEPLOYING_GPU
    assert after.provider_status == "queued_on_new_cluster"
    event = (await store.events_for_job(job.id))[-1]
    assert (event.status, event.applied, event.source) == ("queued_on_new_cluster", False, EventSource.POLL)
    (card,) = await store.due_outbox()
    assert card.dedupe_key == f"card:{job.id}"
    assert dict(card.payload) == {"reason": "queued_on_new_cluster"}


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, text="Service Unavailable"),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(429, json={"status": "error", "message": "Rate limit exceeded", "retry_after": 3600}),
        httpx.Response(401, json={"status": "error", "message": "Invalid Api Key"}),
    ],
)
async def test_provider_errors_leave_the_job_alone(build, store: Store, clock, answer: httpx.Response) -> None:
    reconciler, _, provider = build(answer)
    job = await running_job(store)
    events_before = await store.events_for_job(job.id)
    outbox_before = await store.pending_outbox_count()
    clock.advance(INTERVAL + 1)

    assert await reconciler.run_once() == 1
    after = await store.require_job(job.id)
    assert after.state is JobState.DEPLOYING_GPU
    assert after.last_error is None
    assert after.updated_at == clock()  # touched so the next poll waits an interval
    assert after.progressed_at == job.progressed_at
    assert await store.events_for_job(job.id) == events_before
    assert await store.pending_outbox_count() == outbox_before
    assert provider.asked
    assert await reconciler.run_once() == 0


async def test_a_training_the_provider_does_not_know_fails(build, store: Store, clock) -> None:
    reconciler, _, _ = build(httpx.Response(404, json={"status": "error", "messege": "Training ID does not exist"}))
    job = await running_job(store)
    clock.advance(1)
    await reconciler.run_once(everything=True)
    after = await store.require_job(job.id)
    assert after.state is JobState.FAILED
    assert after.last_error == "The image service has no training with that id."


async def test_a_job_without_a_training_id_is_not_polled(build, store: Store, clock) -> None:
    reconciler, _, provider = build()
    job = await running_job(store, training_id=None)
    assert job.state is JobState.UNCERTAIN
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 1
    assert provider.asked == []
    assert (await store.require_job(job.id)).state is JobState.UNCERTAIN


async def test_previews_expire_after_their_timeout(build, store: Store, clock) -> None:
    reconciler, _, provider = build()
    old = await store.create_job(owner_id=1, guild_id=1, channel_id=2, name="old", params={}, image_count=5)
    clock.advance(PREVIEW_TIMEOUT - 100)
    young = await store.create_job(owner_id=2, guild_id=1, channel_id=2, name="young", params={}, image_count=5)
    clock.advance(100)
    assert await reconciler.run_once(everything=True) == 2
    assert (await store.require_job(old.id)).state is JobState.EXPIRED
    young_after = await store.require_job(young.id)
    assert young_after.state is JobState.PREVIEW
    assert young_after.updated_at == clock()
    assert provider.asked == []


async def test_a_pass_over_everything_pages_through_more_than_one_batch(build, store: Store, clock) -> None:
    reconciler, _, _ = build()
    for index in range(105):
        await store.create_job(owner_id=index, guild_id=1, channel_id=2, name="p", params={}, image_count=5)
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 105  # each checked once, not looped over
    assert await reconciler.run_once(everything=True) == 0  # all touched at "now": none older than it
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 105
