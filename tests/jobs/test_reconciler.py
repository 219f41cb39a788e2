"""The reconciler: polls overdue jobs through the same record path, fails stalled ones, survives provider errors."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import httpx
import pytest

from bot.jobs.model import Job
from bot.jobs.reconciler import Reconciler
from bot.jobs.service import JobService
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.store.sqlite import SqliteStore
from tests.store_helpers import due_outbox, pending_outbox_count

TID = "F5jvdzGnYi"
INTERVAL, DEADLINE, PREVIEW_TIMEOUT = 300, 3600, 600
LOG = " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done : ETA : 15 minutes"


class StatusProvider:
    """Answers `fine_tune_status/{id}` with `answer` and `finetune_list` with `models`; records the calls."""

    def __init__(self, answer: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.models: list[str] = []
        self.listings = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/finetune_list":
            self.listings += 1
            return httpx.Response(200, json={"status": "success", "messege": "model list", "data": self.models})
        assert request.url.path.startswith("/api/v3/fine_tune_status/"), request.url.path
        self.asked.append(request.url.path.rsplit("/", 1)[1])
        return self.answer(request) if callable(self.answer) else self.answer


def status_answer(word: str, data: str = LOG) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "messege": word, "data": data})


@pytest.fixture
def build(store: SqliteStore, settings, make_provider):
    def make(answer=None) -> tuple[Reconciler, JobService, StatusProvider]:
        provider = StatusProvider(answer or status_answer("training_started"))
        service = JobService(store, make_provider(provider), settings)
        reconciler = Reconciler(
            store, service, interval=INTERVAL, stall_deadline=DEADLINE, preview_timeout=PREVIEW_TIMEOUT
        )
        return reconciler, service, provider

    return make


async def running_job(store: SqliteStore, training_id: str | None = TID, owner: int = 1) -> Job:
    job = await store.create_job(owner_id=owner, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    await store.set_card(job.id, 2, 9000 + job.id)  # the Start flow posts the card next
    if training_id is None:
        return (await store.apply_event(job.id, Event(Action.UNCERTAIN, EventSource.SYSTEM), plan_transition)).after
    event = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)
    return (await store.apply_event(job.id, event, plan_transition)).after


async def outbox_keys(store: SqliteStore) -> list[str]:
    return [row[0] for row in await store.db.fetchall("SELECT dedupe_key FROM outbox ORDER BY id")]


async def test_an_overdue_job_is_polled_and_advanced_through_record(build, store: SqliteStore, clock) -> None:
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


async def test_a_poll_to_model_ready_dms_once_like_a_webhook(build, store: SqliteStore, clock) -> None:
    reconciler, _, _ = build(status_answer("model_ready"))
    job = await running_job(store)
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 1
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 0  # terminal now: not scanned again
    assert (await store.require_job(job.id)).state is JobState.MODEL_READY
    assert [k for k in await outbox_keys(store) if k.startswith("dm:")] == [f"dm:{job.id}:model_ready"]


async def test_a_stalled_job_fails_and_its_owner_is_told(build, store: SqliteStore, clock) -> None:
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


async def test_progress_resets_the_stall_clock(build, store: SqliteStore, clock) -> None:
    reconciler, service, _ = build(status_answer("training_started"))
    job = await running_job(store)
    clock.advance(DEADLINE - 100)
    await service.record(job.id, Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="training_started"))
    clock.advance(INTERVAL + 1)  # past the deadline counted from submission, not from the progress
    await reconciler.run_once()
    assert (await store.require_job(job.id)).state is JobState.TRAINING_STARTED


async def test_an_unknown_status_word_is_recorded_and_shown(build, store: SqliteStore, clock) -> None:
    reconciler, _, _ = build(status_answer("Queued_On_New_Cluster", data=""))
    job = await running_job(store)
    outbox_before = await pending_outbox_count(store)
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
    (card,) = await due_outbox(store)
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
async def test_provider_errors_leave_the_job_alone(build, store: SqliteStore, clock, answer: httpx.Response) -> None:
    reconciler, _, provider = build(answer)
    job = await running_job(store)
    events_before = await store.events_for_job(job.id)
    outbox_before = await pending_outbox_count(store)
    clock.advance(INTERVAL + 1)

    assert await reconciler.run_once() == 1
    after = await store.require_job(job.id)
    assert after.state is JobState.DEPLOYING_GPU
    assert after.last_error is None
    assert after.updated_at == clock()  # touched so the next poll waits an interval
    assert after.progressed_at == job.progressed_at
    assert await store.events_for_job(job.id) == events_before
    assert await pending_outbox_count(store) == outbox_before
    assert provider.asked
    assert await reconciler.run_once() == 0


NOT_FOUND = [
    httpx.Response(404, json={"status": "error", "messege": "Training ID does not exist"}),
    httpx.Response(
        404, text="<html><head><title>404 Not Found</title></head></html>", headers={"content-type": "text/html"}
    ),
    httpx.Response(200, json={"status": "error", "messege": "Training ID does not exist"}),
]


@pytest.mark.parametrize("answer", NOT_FOUND)
async def test_not_found_never_fails_a_job_which_then_becomes_ready(build, store: SqliteStore, clock, answer) -> None:
    answers = [answer, answer, status_answer("model_ready")]
    reconciler, _, provider = build(lambda _request: answers.pop(0))
    job = await running_job(store)
    for _ in range(2):
        clock.advance(INTERVAL + 1)
        assert await reconciler.run_once() == 1
        after = await store.require_job(job.id)
        assert after.state is JobState.DEPLOYING_GPU and after.last_error is None
    clock.advance(INTERVAL + 1)
    await reconciler.run_once()
    assert (await store.require_job(job.id)).state is JobState.MODEL_READY
    assert provider.asked == [TID, TID, TID]


async def test_a_training_never_found_fails_only_at_the_stall_deadline_saying_so(
    build, store: SqliteStore, clock
) -> None:
    reconciler, _, _ = build(NOT_FOUND[0])
    job = await running_job(store)
    clock.advance(DEADLINE - 10)
    await reconciler.run_once()
    assert (await store.require_job(job.id)).state is JobState.DEPLOYING_GPU
    clock.advance(INTERVAL + 1)
    await reconciler.run_once()
    after = await store.require_job(job.id)
    assert after.state is JobState.FAILED
    assert "Stalled" in after.last_error and "does not know this training" in after.last_error


@pytest.mark.parametrize(
    "body",
    [
        {"status": "failed", "messege": "Training failed: the GPU worker crashed."},
        {"status": "error", "message": "Training failed: the GPU worker crashed."},
        {"status": "success", "messege": "failed", "data": "Training failed: the GPU worker crashed."},
    ],
)
async def test_a_failure_only_polling_reveals_fails_the_job_at_once_with_the_reason(
    build, store: SqliteStore, clock, body
) -> None:
    reconciler, _, _ = build(httpx.Response(200, json=body))
    job = await running_job(store)
    clock.advance(INTERVAL + 1)
    await reconciler.run_once()
    after = await store.require_job(job.id)
    assert after.state is JobState.FAILED
    assert after.last_error == "Training failed: the GPU worker crashed."
    assert [k for k in await outbox_keys(store) if k.startswith("dm:")] == [f"dm:{job.id}:failed"]
    event = (await store.events_for_job(job.id))[-1]
    assert (event.status, event.source) == ("failed", EventSource.POLL)


async def test_one_job_that_vanishes_mid_pass_does_not_end_the_pass(build, store: SqliteStore, clock) -> None:
    reconciler, _service, _provider = build(status_answer("training_started"))
    first = await running_job(store, "FIRST00001", owner=1)
    second = await running_job(store, "SECOND0002", owner=2)
    real_check = reconciler.check

    async def check(job: Job) -> None:
        if job.id == first.id:
            await store.forget_user(1)  # /forgetme while the pass is under way
        await real_check(job)

    reconciler.check = check  # type: ignore[method-assign]
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 2
    assert (await store.require_job(second.id)).state is JobState.TRAINING_STARTED


# -- unconfirmed submissions ------------------------------------------------------------------------


async def uncertain_job(store: SqliteStore, owner: int, baseline: list[str] | None) -> Job:
    job = await running_job(store, training_id=None, owner=owner)
    if baseline is not None:
        await store.record_listing(baseline, baseline_for=job.id)
    return await store.require_job(job.id)


async def test_an_unconfirmed_submission_adopts_the_one_model_that_appeared_after_it(
    build, store: SqliteStore, clock
) -> None:
    reconciler, _, provider = build(status_answer("training_started"))
    job = await uncertain_job(store, 1, baseline=["OLD0000001"])
    provider.models = ["OLD0000001"]
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 1
    assert (await store.require_job(job.id)).state is JobState.UNCERTAIN  # nothing new yet
    provider.models = ["OLD0000001", "NEW0000001"]
    clock.advance(INTERVAL + 1)
    await reconciler.run_once()
    after = await store.require_job(job.id)
    assert after.training_id == "NEW0000001"
    assert after.state is JobState.TRAINING_STARTED  # adopted, then polled at once
    assert provider.asked == ["NEW0000001"]


async def test_a_model_claimed_by_another_job_is_not_adopted(build, store: SqliteStore, clock) -> None:
    reconciler, _, provider = build()
    job = await uncertain_job(store, 1, baseline=[])
    await running_job(store, "TAKEN00001", owner=2)
    provider.models = ["TAKEN00001"]
    clock.advance(1)
    await reconciler.run_once(everything=True)
    assert (await store.require_job(job.id)).training_id is None


async def test_ambiguous_candidates_are_never_adopted(build, store: SqliteStore, clock) -> None:
    reconciler, _, provider = build()
    first = await uncertain_job(store, 1, baseline=[])
    second = await uncertain_job(store, 2, baseline=[])
    provider.models = ["NEW0000001"]  # could be either job's
    clock.advance(1)
    await reconciler.run_once(everything=True)
    assert (await store.require_job(first.id)).training_id is None
    assert (await store.require_job(second.id)).training_id is None
    assert provider.listings == 1  # one listing serves every unconfirmed job


async def test_a_job_without_a_baseline_listing_is_never_matched(build, store: SqliteStore, clock) -> None:
    reconciler, _, provider = build()
    job = await uncertain_job(store, 1, baseline=None)
    provider.models = ["NEW0000001"]
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 1
    assert provider.asked == []
    assert (await store.require_job(job.id)).state is JobState.UNCERTAIN


async def test_an_unconfirmed_submission_fails_at_the_deadline_saying_the_outcome_is_unknown(
    build, store: SqliteStore, clock
) -> None:
    reconciler, _, _provider = build()
    job = await uncertain_job(store, 1, baseline=[])
    clock.advance(DEADLINE + 1)
    await reconciler.run_once()
    after = await store.require_job(job.id)
    assert after.state is JobState.FAILED
    assert "outcome is unknown" in after.last_error and "not charged twice" in after.last_error
    assert "dashboard" in after.last_error
    assert f"dm:{job.id}:failed" in await outbox_keys(store)


async def test_previews_expire_after_their_timeout(build, store: SqliteStore, clock) -> None:
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


async def test_a_pass_over_everything_pages_through_more_than_one_batch(build, store: SqliteStore, clock) -> None:
    reconciler, _, _ = build()
    for index in range(105):
        await store.create_job(owner_id=index, guild_id=1, channel_id=2, name="p", params={}, image_count=5)
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 105  # each checked once, not looped over
    assert await reconciler.run_once(everything=True) == 0  # all touched at "now": none older than it
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 105


# -- polling mode (no PUBLIC_URL): every job once per interval, the calls spread over it ----------


class StopClock(Exception):
    """Raised by the fake sleep once the test's time is up, to end `Reconciler.run`."""


async def test_polling_mode_polls_each_job_once_per_interval_spread_over_it(
    store: SqliteStore, settings, make_provider, clock
) -> None:
    poll, jobs, end = 60, 4, 400
    for index in range(jobs):  # all updated at the same instant, as after a restart
        await running_job(store, f"T{index}", owner=index + 1)
    start = clock.advance(1)
    calls: list[tuple[float, str]] = []  # (seconds since start, training id) of each status call

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(((clock() - start).total_seconds(), request.url.path.rsplit("/", 1)[1]))
        return status_answer("training_started")

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:  # the fake clock moves only when the reconciler waits
        assert seconds > 0
        sleeps.append(seconds)
        clock.advance(seconds)
        if (clock() - start).total_seconds() > end:
            raise StopClock

    service = JobService(store, make_provider(StatusProvider(answer)), settings)
    reconciler = Reconciler(
        store,
        service,
        interval=poll,
        stall_deadline=DEADLINE,
        preview_timeout=PREVIEW_TIMEOUT,
        spread=True,
        sleep=sleep,
    )

    with pytest.raises(StopClock):
        await reconciler.run()  # the real loop: a pass over everything, then a pass every `period`

    # The start-up pass spreads the four jobs over the interval instead of asking all at once.
    assert calls[:jobs] == [(0.0, "T0"), (15.0, "T1"), (30.0, "T2"), (45.0, "T3")]
    # No two calls closer than interval / jobs, whichever the jobs.
    times = [at for at, _ in calls]
    assert min(b - a for a, b in itertools.pairwise(times)) >= poll / jobs
    for index in range(jobs):
        mine = [at for at, tid in calls if tid == f"T{index}"]
        gaps = [b - a for a, b in itertools.pairwise(mine)]
        assert len(mine) >= end // (poll + reconciler.period), (index, mine)
        assert min(gaps) >= poll, f"T{index} polled twice within the interval: {mine}"
        assert max(gaps) <= poll + reconciler.period, f"T{index} not polled every interval: {mine}"


async def test_polling_mode_passes_called_often_still_poll_a_job_once_per_interval(
    store: SqliteStore, settings, make_provider, clock
) -> None:
    provider = StatusProvider(status_answer("training_started"))
    service = JobService(store, make_provider(provider), settings)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    reconciler = Reconciler(
        store, service, interval=5, stall_deadline=DEADLINE, preview_timeout=PREVIEW_TIMEOUT, spread=True, sleep=sleep
    )
    await running_job(store)
    clock.advance(5.5)
    for _ in range(6):  # a pass every second, 5.5 s to 10.5 s: the job is asked at 5.5 s only
        await reconciler.run_once()
        clock.advance(1)
    assert provider.asked == [TID]
    for _ in range(5):  # 11.5 s to 15.5 s: once more, at 11.5 s
        await reconciler.run_once()
        clock.advance(1)
    assert provider.asked == [TID, TID]


async def test_with_webhooks_the_safety_net_polls_every_overdue_job_at_once(build, store: SqliteStore, clock) -> None:
    reconciler, _, provider = build(status_answer("training_started"))
    assert reconciler.spread is False and reconciler.period == min(60.0, INTERVAL / 2)
    for index in range(3):
        await running_job(store, f"T{index}", owner=index + 1)
    clock.advance(INTERVAL + 1)
    assert await reconciler.run_once() == 3
    assert provider.asked == ["T0", "T1", "T2"]  # no pacing: the frozen clock never moved
