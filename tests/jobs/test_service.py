"""JobService against the real SqliteStore (temp SQLite) and a real ProviderClient on an httpx.MockTransport."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from bot.errors import UserError
from bot.jobs import service as service_module
from bot.jobs.model import Job, OutboxDraft, PreviewPhoto, TransitionPlan
from bot.jobs.provider_errors import ProviderError
from bot.jobs.service import JobService, TrainingParams, hash_secret, provider_training_type, secret_matches
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.store import sqlite as repository_module
from bot.store.sqlite import SqliteStore
from tests.store_helpers import job_by_training_id, pending_outbox_count

TID = "F5jvdzGnYi"
URLS = [f"https://cdn.discordapp.com/attachments/1/2/crop{i}.png" for i in range(6)]
ACCEPTED = {
    "status": "success",
    "messege": "deploying_gpu",
    "data": "it will take upto 30 minutes.",
    "training_id": TID,
}


class Provider:
    """Scripted provider: `answers[endpoint]` is a Response, an exception or a callable; requests are kept."""

    def __init__(self, **answers: object) -> None:
        # The account's models are listed before each submission; by default the list is empty.
        self.answers = {"finetune_list": ok({"status": "success", "messege": "model list", "data": []}), **answers}
        self.requests: list[httpx.Request] = []
        #: finetune_list calls are kept apart: every submission is preceded by one.
        self.listings: list[httpx.Request] = []
        self.order: list[str] = []  # every endpoint called, listings included

    def __call__(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.removeprefix("/api/v3/").split("/")[0]
        self.order.append(endpoint)
        (self.listings if endpoint == "finetune_list" else self.requests).append(request)
        answer = self.answers.get(endpoint)
        if answer is None:
            raise AssertionError(f"unexpected call {request.url.path}")
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        assert isinstance(answer, httpx.Response)
        return answer

    @property
    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    def body(self, index: int = -1) -> dict:
        return json.loads(self.requests[index].content)


def ok(body: dict, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


@pytest.fixture
def build(store: SqliteStore, settings, make_provider) -> Callable[..., tuple[JobService, Provider, list[int]]]:
    def make(**answers: object) -> tuple[JobService, Provider, list[int]]:
        provider = Provider(**answers)
        wakeups: list[int] = []
        service = JobService(store, make_provider(provider), settings, on_outbox=lambda: wakeups.append(1))
        return service, provider, wakeups

    return make


async def preview(service: JobService, owner: int = 1, **params: object) -> Job:
    return await service.create_preview(
        owner_id=owner,
        guild_id=10,
        channel_id=20,
        name="portrait",
        params=TrainingParams(instance_prompt="photo of sks man", class_prompt="photo of a man", **params),
        photos=[PreviewPhoto(f"photo{i}.jpg", b"jpeg") for i in range(len(URLS))],
        card_in_dms=False,
        expires_at=service.store.now() + timedelta(minutes=10),
    )


async def submitting(service: JobService, owner: int = 1, **params: object) -> Job:
    """Start pressed and the job's card posted, as the Start flow does before calling the provider."""
    job = await preview(service, owner, **params)
    await service.begin_submission(job.id)
    await service.store.set_card(job.id, job.channel_id, 9000 + job.id)
    return await service.store.require_job(job.id)


async def training(service: JobService, training_id: str = TID, owner: int = 1) -> Job:
    job = await submitting(service, owner)
    event = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)
    return (await service.record(job.id, event)).after


async def counts(store: SqliteStore) -> dict[str, int]:
    return {
        table: (await store.db.fetchone(f"SELECT COUNT(*) FROM {table}"))[0]
        for table in ("jobs", "job_events", "outbox")
    }


async def outbox_keys(store: SqliteStore) -> list[str]:
    return [row[0] for row in await store.db.fetchall("SELECT dedupe_key FROM outbox ORDER BY id")]


def webhook(word: str, training_id: str | None = TID) -> Event:
    return Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status=word, training_id=training_id)


# -- record: the one state-change function --------------------------------------------------------


async def test_record_writes_state_event_and_outbox_and_wakes_the_worker(build, store: SqliteStore) -> None:
    service, _, wakeups = build()
    job = await training(service)
    assert job.state is JobState.DEPLOYING_GPU
    wakeups.clear()
    result = await service.record(job.id, webhook("training_started"), payload='{"training_status": "x"}')
    assert result.after.state is JobState.TRAINING_STARTED
    events = await store.events_for_job(job.id)
    assert (events[-1].status, events[-1].source, events[-1].applied) == ("training_started", EventSource.WEBHOOK, True)
    assert await outbox_keys(store) == [f"card:{job.id}"]
    assert wakeups == [1]
    await service.record(job.id, webhook("training_started"))  # a duplicate: nothing to send
    assert wakeups == [1]


async def test_a_crash_in_the_planner_or_an_outbox_insert_writes_nothing(
    build, store: SqliteStore, monkeypatch
) -> None:
    service, _, wakeups = build()
    job = await training(service)
    before_counts, before_job = await counts(store), await store.require_job(job.id)
    wakeups.clear()

    def crashing_planner(current: Job, event: Event) -> TransitionPlan:
        raise RuntimeError("power cut in the planner")

    monkeypatch.setattr(service_module, "plan_transition", crashing_planner)
    with pytest.raises(RuntimeError):
        await service.record(job.id, webhook("model_ready"))

    def planner_with_bad_item(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        bad = OutboxDraft("dm", "dm:bad", {"unserializable": object()})  # fails after the UPDATE and the event
        return TransitionPlan(plan.new_state, plan.recorded_status, plan.reason, plan.updates, (*plan.outbox, bad))

    monkeypatch.setattr(service_module, "plan_transition", planner_with_bad_item)
    with pytest.raises(TypeError):
        await service.record(job.id, webhook("model_ready"))
    monkeypatch.setattr(service_module, "plan_transition", plan_transition)

    calls = 0
    original = repository_module.write_outbox

    def enqueue_then_crash(conn, job_id, draft, now):
        nonlocal calls
        calls += 1
        if calls == 2:  # the card was inserted; the DM insert dies
            raise sqlite3.OperationalError("disk I/O error")
        original(conn, job_id, draft, now)

    monkeypatch.setattr(repository_module, "write_outbox", enqueue_then_crash)
    with pytest.raises(sqlite3.OperationalError):
        await service.record(job.id, webhook("model_ready"))
    assert calls == 2

    assert await counts(store) == before_counts
    assert await store.require_job(job.id) == before_job
    assert wakeups == []

    monkeypatch.setattr(repository_module, "write_outbox", original)  # after the "restart" the webhook applies fully
    result = await service.record(job.id, webhook("model_ready"))
    assert result.after.state is JobState.MODEL_READY
    assert await outbox_keys(store) == [f"card:{job.id}", f"dm:{job.id}:model_ready"]


async def test_model_ready_three_times_makes_exactly_one_dm(build, store: SqliteStore) -> None:
    service, _, _ = build()
    job = await training(service)
    for _ in range(3):
        await service.record(job.id, webhook("model_ready"))
    dms = [key for key in await outbox_keys(store) if key.startswith("dm:")]
    assert dms == [f"dm:{job.id}:model_ready"]
    statuses = [e.status for e in await store.events_for_job(job.id)]
    assert statuses.count("model_ready") == 1


async def test_out_of_order_webhooks_end_at_the_furthest_state(build, store: SqliteStore) -> None:
    service, _, _ = build()
    job = await training(service)
    await service.record(job.id, webhook("training_started"))
    await service.record(job.id, webhook("deploying_gpu"))
    await service.record(job.id, webhook("training_success"))
    job = await store.require_job(job.id)
    assert job.state is JobState.TRAINING_SUCCESS
    assert job.provider_status == "training_success"
    events = {e.status: e.applied for e in await store.events_for_job(job.id)}
    assert events["training_started"] is True
    assert events["training_success"] is True


async def test_a_late_first_word_is_recorded_as_not_applied(build, store: SqliteStore) -> None:
    service, _, _ = build()
    job = await submitting(service)
    await service.record(job.id, webhook("training_started"))  # deploying_gpu never came first
    await service.record(job.id, webhook("deploying_gpu"))
    await service.record(job.id, webhook("training_success"))
    job = await store.require_job(job.id)
    assert job.state is JobState.TRAINING_SUCCESS
    assert job.training_id == TID
    applied = [(e.status, e.applied) for e in await store.events_for_job(job.id)]
    assert applied == [
        ("submitting", True),
        ("training_started", True),
        ("deploying_gpu", False),
        ("training_success", True),
    ]


async def test_a_webhook_for_an_uncertain_job_adopts_its_training_id(build, store: SqliteStore) -> None:
    service, _, _ = build()
    job = await submitting(service)
    await service.record(job.id, Event(Action.UNCERTAIN, EventSource.SYSTEM, detail="no answer"))
    result = await service.record(job.id, webhook("training_started", "LATE42abc"))
    assert result.before.state is JobState.UNCERTAIN
    assert result.after.state is JobState.TRAINING_STARTED
    assert result.after.training_id == "LATE42abc"
    assert (await job_by_training_id(store, "LATE42abc")).id == job.id


# -- submit -----------------------------------------------------------------------------------------


async def test_submit_accepted_stores_the_id_and_only_the_secret_hash(build, store: SqliteStore, settings) -> None:
    service, provider, _ = build(lora_fine_tune=ok(ACCEPTED))
    job = await submitting(service, training_type="woman", seed=42)

    after = await service.submit(job, URLS)

    assert after.state is JobState.DEPLOYING_GPU
    assert after.training_id == TID
    assert after.image_urls == tuple(URLS)
    assert (await store.require_job(job.id)).eta_text == "it will take upto 30 minutes."
    assert provider.paths == ["/api/v3/lora_fine_tune"]
    body = provider.body()
    prefix = f"https://bot.example.org/webhooks/training/{job.id}/"
    assert body["webhook"].startswith(prefix)
    secret = body["webhook"].removeprefix(prefix)
    assert len(secret) >= 32 and "/" not in secret
    stored = await store.require_job(job.id)
    assert stored.webhook_secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert body["images"] == URLS
    assert body["max_train_steps"] == str(2 * len(URLS))
    assert body["training_type"] == "female"
    assert body["seed"] == "42"
    assert body["instance_prompt"] == "photo of sks man"
    assert body["key"] == settings.sdapi_key.get_secret_value()

    dump = ""
    for table in ("jobs", "job_events", "outbox", "kv", "users"):
        dump += repr([tuple(row) for row in await store.db.fetchall(f"SELECT * FROM {table}")])
    assert secret not in dump
    assert settings.sdapi_key.get_secret_value() not in dump
    event = (await store.events_for_job(job.id))[-1]
    assert (event.status, event.applied) == ("deploying_gpu", True)
    assert json.loads(event.payload)["training_id"] == TID


async def test_each_submission_gets_its_own_secret(build, store: SqliteStore) -> None:
    service, provider, _ = build(lora_fine_tune=lambda r: ok({**ACCEPTED, "training_id": f"T{len(provider.requests)}"}))
    first = await service.submit(await submitting(service, owner=1), URLS)
    second = await service.submit(await submitting(service, owner=2), URLS)
    secrets = [provider.body(i)["webhook"].rsplit("/", 1)[1] for i in (0, 1)]
    assert secrets[0] != secrets[1]
    assert first.webhook_secret_hash != second.webhook_secret_hash
    assert secret_matches(secrets[0], first.webhook_secret_hash)
    assert not secret_matches(secrets[0], second.webhook_secret_hash)


async def test_submit_rejected_fails_with_the_providers_message(build, store: SqliteStore) -> None:
    service, provider, _ = build(lora_fine_tune=ok({"status": "error", "messege": "Images are not accessible"}))
    job = await submitting(service)
    after = await service.submit(job, URLS)
    assert after.state is JobState.FAILED
    assert "Images are not accessible" in after.last_error
    assert after.training_id is None
    assert len(provider.requests) == 1
    assert f"dm:{job.id}:failed" in await outbox_keys(store)


async def test_submit_without_an_answer_is_uncertain_and_sent_once(build, store: SqliteStore) -> None:
    service, provider, _ = build(lora_fine_tune=httpx.ReadTimeout("no answer"))
    job = await submitting(service)
    after = await service.submit(job, URLS)
    assert after.state is JobState.UNCERTAIN
    assert len(provider.requests) == 1  # never resubmitted
    assert after.training_id is None
    assert after.image_urls == tuple(URLS)
    assert after.last_error and "don't start it again" in after.last_error
    assert f"dm:{job.id}:uncertain" in await outbox_keys(store)


async def test_a_gateway_timeout_on_submit_is_uncertain_too(build) -> None:
    service, provider, _ = build(lora_fine_tune=httpx.Response(504, text="Gateway Timeout"))
    after = await service.submit(await submitting(service), URLS)
    assert after.state is JobState.UNCERTAIN
    assert len(provider.requests) == 1


# -- after a restart ----------------------------------------------------------------------------------


async def test_recover_interrupted(build, store: SqliteStore) -> None:
    service, provider, _ = build()
    never_sent = await submitting(service, owner=1)
    maybe_sent = await submitting(service, owner=2)
    await store.prepare_submission(maybe_sent.id, image_urls=URLS, secret_hash="h")
    running = await training(service, owner=3)
    untouched_preview = await preview(service, owner=4)

    assert await service.recover_interrupted() == 2

    failed = await store.require_job(never_sent.id)
    assert failed.state is JobState.FAILED
    assert "nothing was sent or charged" in failed.last_error
    uncertain = await store.require_job(maybe_sent.id)
    assert uncertain.state is JobState.UNCERTAIN
    assert "may or may not have started" in uncertain.last_error
    assert (await store.require_job(running.id)).state is JobState.DEPLOYING_GPU
    assert (await store.require_job(untouched_preview.id)).state is JobState.PREVIEW
    assert provider.requests == []  # nothing is resubmitted
    assert await service.recover_interrupted() == 0


async def test_expire_stale_previews(build, store: SqliteStore, clock, settings) -> None:
    service, _, _ = build()
    old = await preview(service, owner=1)
    clock.advance(settings.preview_timeout_seconds - 60)
    young = await preview(service, owner=2)
    clock.advance(60)

    assert await service.expire_stale_previews() == 1
    expired = await store.require_job(old.id)
    assert expired.state is JobState.EXPIRED
    assert expired.finished_at == clock()
    assert (await store.require_job(young.id)).state is JobState.PREVIEW
    assert await pending_outbox_count(store) == 0  # a preview's card is not a channel message

    assert await service.expire_stale_previews() == 0  # a young preview survives (and a restart too)
    assert (await store.require_job(young.id)).state is JobState.PREVIEW
    assert await store.load_preview(old.id) is None  # the expired one's crops are deleted with it
    assert await store.load_preview(young.id) is not None


async def test_expire_preview_does_not_touch_a_started_job(build, store: SqliteStore) -> None:
    service, _, _ = build()
    job = await submitting(service)
    result = await service.expire_preview(job.id, "timed out")
    assert not result.changed
    assert (await store.require_job(job.id)).state is JobState.SUBMITTING


# -- cancel and forget -----------------------------------------------------------------------------------


async def test_cancel_calls_the_provider_on_the_documented_path(build, store: SqliteStore) -> None:
    service, provider, _ = build(cancle_training=ok({"status": "success", "messege": "Training cancelled"}))
    job = await training(service)
    after = await service.cancel(job, by_user_id=job.owner_id)
    assert provider.paths == [f"/api/v3/cancle_training/{TID}"]
    assert after.state is JobState.CANCELLED
    assert after.last_error == "Cancelled by its owner."
    assert f"dm:{job.id}:cancelled" in await outbox_keys(store)


async def test_cancel_by_a_manager_names_them(build) -> None:
    service, _, _ = build(cancle_training=ok({"status": "success"}))
    job = await training(service)
    after = await service.cancel(job, by_user_id=999)
    assert after.last_error == "Cancelled by <@999>."


async def test_cancel_without_a_training_id_does_not_call_the_provider(build) -> None:
    service, provider, _ = build()
    after = await service.cancel(await submitting(service), by_user_id=1)
    assert after.state is JobState.CANCELLED
    assert provider.requests == []


async def test_cancelling_a_finished_job_is_a_user_error(build, store: SqliteStore) -> None:
    service, provider, _ = build()
    job = await training(service)
    await service.record(job.id, webhook("model_ready"))
    done = await store.require_job(job.id)
    with pytest.raises(UserError, match="already finished"):
        await service.cancel(done, by_user_id=1)
    assert provider.requests == []
    assert (await store.require_job(job.id)).state is JobState.MODEL_READY


async def test_cancel_of_a_job_that_finished_meanwhile_is_a_user_error(build, store: SqliteStore) -> None:
    service, _, _ = build(cancle_training=ok({"status": "error", "messege": "Training has already finished."}))
    stale_copy = await training(service)
    await service.record(stale_copy.id, webhook("model_ready"))
    with pytest.raises(UserError, match="already finished"):
        await service.cancel(stale_copy, by_user_id=1)
    assert (await store.require_job(stale_copy.id)).state is JobState.MODEL_READY


async def test_cancel_when_the_provider_does_not_know_the_training(build) -> None:
    service, provider, _ = build(
        cancle_training=ok({"status": "error", "messege": "Training not found"}, 404),
        cancel_training=ok({"status": "error", "messege": "Training not found"}, 404),
    )
    after = await service.cancel(await training(service), by_user_id=1)
    assert after.state is JobState.CANCELLED
    assert provider.paths[0] == f"/api/v3/cancle_training/{TID}"


async def test_cancel_when_the_provider_is_down_leaves_the_job_alone(build, store: SqliteStore) -> None:
    service, provider, _ = build(cancle_training=httpx.Response(503, text="down"))
    job = await training(service)
    with pytest.raises(ProviderError):
        await service.cancel(job, by_user_id=1)
    assert (await store.require_job(job.id)).state is JobState.DEPLOYING_GPU
    assert len(provider.requests) == 2  # retried (max_attempts=2), then given up


async def test_forget_user_cancels_running_trainings_then_deletes(build, store: SqliteStore) -> None:
    service, provider, _ = build(cancle_training=ok({"status": "success"}), finetune=ok({"status": "success"}))
    await training(service, owner=1)
    await preview(service, owner=1)
    other = await training(service, "OTHER", owner=2)
    assert await service.forget_user(1) == 2
    assert provider.paths == [f"/api/v3/cancle_training/{TID}", f"/api/v3/finetune/delete/{TID}"]
    assert [row[0] for row in await store.db.fetchall("SELECT id FROM jobs")] == [other.id]


async def test_forget_user_deletes_finished_models_and_tolerates_models_already_gone(build, store: SqliteStore) -> None:
    deleted: list[str] = []

    def delete(request: httpx.Request) -> httpx.Response:
        deleted.append(request.url.path.rsplit("/", 1)[1])
        if deleted[-1] == "GONE":
            return ok({"status": "error", "messege": "Training ID does not exist"}, 404)
        return ok({"status": "success", "messege": "Model deleted successfully"})

    service, _provider, _ = build(finetune=delete)
    for training_id in ("READY1", "GONE"):
        job = await training(service, training_id, owner=1)
        await service.record(job.id, Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="model_ready"))
    assert await service.forget_user(1) == 2
    assert sorted(deleted) == ["GONE", "READY1"]
    assert await store.db.fetchall("SELECT id FROM jobs") == []


async def test_forget_user_deletes_nothing_when_a_model_cannot_be_deleted(build, store: SqliteStore) -> None:
    service, _, _ = build(finetune=httpx.Response(503, text="down"))
    job = await training(service, "READY1", owner=1)
    await service.record(job.id, Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="model_ready"))
    with pytest.raises(UserError, match="nothing was deleted"):
        await service.forget_user(1)
    assert (await store.require_job(job.id)).state is JobState.MODEL_READY


async def test_forget_user_tells_the_listeners(build) -> None:
    service, _, _ = build()
    told: list[int] = []
    service.add_forget_listener(told.append)
    await preview(service, owner=7)
    await service.forget_user(7)
    assert told == [7]


async def test_forget_user_deletes_nothing_when_a_cancel_fails(build, store: SqliteStore) -> None:
    service, _, _ = build(cancle_training=httpx.Response(503, text="down"))
    job = await training(service, owner=1)
    with pytest.raises(UserError, match="nothing was deleted"):
        await service.forget_user(1)
    assert (await store.require_job(job.id)).state is JobState.DEPLOYING_GPU


# -- helpers ----------------------------------------------------------------------------------------


def test_secret_hashing() -> None:
    secret = "abcDEF123_-xyz"
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret_matches(secret, hash_secret(secret))
    assert not secret_matches(secret + "x", hash_secret(secret))
    assert not secret_matches(secret, None)
    assert not secret_matches(secret, "")


def test_training_parameters(make_settings) -> None:
    params = TrainingParams(instance_prompt="a", class_prompt="b", max_train_steps=5000)
    assert TrainingParams.from_dict(params.as_dict()) == params
    assert params.steps_for(8) == 2000
    assert TrainingParams(instance_prompt="a", class_prompt="b").steps_for(7) == 14
    assert provider_training_type("woman", make_settings()) == "female"
    assert provider_training_type("woman", make_settings(sdapi_training_type_woman="women")) == "women"
    assert [provider_training_type(c, make_settings()) for c in ("man", "couple", "object")] == [
        "men",
        "couple",
        "null",
    ]


# -- submissions the provider refuses for now -----------------------------------------------------

QUEUE_FULL = {"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests allowed.", "retry_after": 7}
SPAM_FILTER = {
    "status": "error",
    "message": "Rate limit exceeded",
    "tips": "you are sending same request multiple times, spam filter is enabled, please wait for 30 seconds",
}
TYPE_REFUSED = {"status": "error", "messege": {"training_type": ["The selected training type is invalid."]}}


def scripted(*answers: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(answers)
    return lambda _request: queue.pop(0)


def sleeps_into(waits: list[float]) -> Callable[[float], object]:
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return sleep


async def test_a_full_queue_is_waited_out_and_the_training_created_once(build, store: SqliteStore) -> None:
    service, provider, _ = build(lora_fine_tune=scripted(ok(QUEUE_FULL, 429), ok(QUEUE_FULL), ok(ACCEPTED)))
    waits: list[float] = []
    told: list[float] = []
    service._sleep = sleeps_into(waits)

    async def on_wait(seconds: float) -> None:
        told.append(seconds)

    job = await submitting(service)
    after = await service.submit(job, URLS, on_queue_wait=on_wait)
    assert after.state is JobState.DEPLOYING_GPU and after.training_id == TID
    assert waits == [7.0, 7.0] and told == [7.0, 7.0]
    assert len(provider.requests) == 3
    hooks = [provider.body(i)["webhook"] for i in range(3)]
    assert len(set(hooks)) == 3, "each attempt carries a fresh secret, so no two are identical requests"
    assert secret_matches(hooks[-1].rsplit("/", 1)[1], after.webhook_secret_hash)
    assert not secret_matches(hooks[0].rsplit("/", 1)[1], after.webhook_secret_hash)


async def test_a_queue_that_stays_full_fails_the_job_saying_nothing_was_charged(build, make_settings) -> None:
    service, provider, _ = build(lora_fine_tune=ok(QUEUE_FULL))
    service.settings = make_settings(sdapi_queue_retry_seconds=20)
    waits: list[float] = []
    service._sleep = sleeps_into(waits)
    after = await service.submit(await submitting(service), URLS)
    assert after.state is JobState.FAILED
    assert "nothing was charged" in after.last_error
    assert waits == [7.0, 7.0] and len(provider.requests) == 3


async def test_in_polling_mode_the_webhook_is_null_and_resends_wait_out_the_duplicate_window(
    build, make_settings
) -> None:
    """No PUBLIC_URL: `webhook: null`, so two attempts are the same request; a full queue's short
    `retry_after` is stretched past the provider's 30 s duplicate window."""
    service, provider, _ = build(lora_fine_tune=scripted(ok(QUEUE_FULL, 429), ok(ACCEPTED)))
    service.settings = make_settings(public_url=None)
    waits: list[float] = []
    service._sleep = sleeps_into(waits)
    after = await service.submit(await submitting(service), URLS)
    assert after.state is JobState.DEPLOYING_GPU and after.training_id == TID
    assert [provider.body(i)["webhook"] for i in range(2)] == [None, None]
    assert "webhook" in provider.body()  # sent, as JSON null
    assert waits == [31.0]  # not 7: the same body within 30 s would hit the duplicate filter


async def test_the_duplicate_filter_makes_a_submission_uncertain_and_it_is_never_resent(build) -> None:
    service, provider, _ = build(lora_fine_tune=ok(SPAM_FILTER, 429))
    service._sleep = sleeps_into([])
    after = await service.submit(await submitting(service), URLS)
    assert after.state is JobState.UNCERTAIN
    assert len(provider.requests) == 1


@pytest.mark.parametrize(
    "shape", [TYPE_REFUSED, {"status": "error", "messege": "The selected training type is invalid."}]
)
async def test_a_woman_is_resubmitted_once_with_the_other_spelling_which_is_remembered(
    build, store: SqliteStore, shape: dict
) -> None:
    service, provider, _ = build(
        lora_fine_tune=scripted(ok(shape, 400), ok(ACCEPTED), ok({**ACCEPTED, "training_id": "T2"}))
    )
    after = await service.submit(await submitting(service, training_type="woman"), URLS)
    assert after.training_id == TID
    assert [provider.body(i)["training_type"] for i in range(2)] == ["female", "women"]
    assert await store.get_value("provider.training_type_woman") == "women"
    # The next woman's training uses the spelling that worked, first time.
    await service.submit(await submitting(service, owner=2, training_type="woman"), URLS)
    assert provider.body(2)["training_type"] == "women" and len(provider.requests) == 3


async def test_a_second_spelling_refusal_fails_the_job_after_two_attempts(build, store: SqliteStore) -> None:
    service, provider, _ = build(lora_fine_tune=ok(TYPE_REFUSED))
    after = await service.submit(await submitting(service, training_type="woman"), URLS)
    assert after.state is JobState.FAILED and "training_type" in after.last_error
    assert len(provider.requests) == 2
    assert await store.get_value("provider.training_type_woman") is None


async def test_a_forced_spelling_is_never_switched(build, make_settings) -> None:
    service, provider, _ = build(lora_fine_tune=ok(TYPE_REFUSED))
    service.settings = make_settings(sdapi_training_type_woman="women")
    after = await service.submit(await submitting(service, training_type="woman"), URLS)
    assert after.state is JobState.FAILED
    assert [provider.body(i)["training_type"] for i in range(len(provider.requests))] == ["women"]


async def test_a_man_refused_for_training_type_is_not_resubmitted(build) -> None:
    service, provider, _ = build(lora_fine_tune=ok(TYPE_REFUSED))
    after = await service.submit(await submitting(service), URLS)
    assert after.state is JobState.FAILED and len(provider.requests) == 1


async def test_an_unknown_word_in_the_create_answer_is_still_an_accepted_training(build) -> None:
    service, _, _ = build(lora_fine_tune=ok({**ACCEPTED, "messege": "queued_for_gpu"}))
    after = await service.submit(await submitting(service), URLS)
    assert after.state is JobState.DEPLOYING_GPU
    assert after.training_id == TID and after.provider_status == "queued_for_gpu"


async def test_the_accounts_models_are_listed_before_each_submission(build, store: SqliteStore) -> None:
    listed = ok({"status": "success", "messege": "model list", "data": ["OLD1", "OLD2"]})
    service, provider, _ = build(lora_fine_tune=ok(ACCEPTED), finetune_list=listed)
    after = await service.submit(await submitting(service), URLS)
    assert provider.order == ["finetune_list", "lora_fine_tune"]
    assert after.baseline_listing is not None
    assert await store.unclaimed_models_since(after.baseline_listing) == set()
    assert await store.unclaimed_models_since(after.baseline_listing - 1) == {"OLD1", "OLD2"}


async def test_a_failed_listing_does_not_stop_the_submission(build) -> None:
    service, _provider, _ = build(lora_fine_tune=ok(ACCEPTED), finetune_list=httpx.Response(500))
    after = await service.submit(await submitting(service), URLS)
    assert after.training_id == TID and after.baseline_listing is None
