"""The webhook receiver over real loopback HTTP: accepted webhooks persist; rejected ones write nothing.

Every authentic webhook (right job, right secret, the job's model_id) is answered 2xx, including
duplicates and late ones for finished jobs, which write nothing (and, once the job is known to
have finished, touch no database at all); only failed authentication spends the rate limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.jobs.model import Job
from bot.jobs.service import JobService, hash_secret
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.store import Database
from bot.store.sqlite import SqliteStore
from bot.webhooks import KnownJob, RateLimiter, WebhookServer, parse_body, status_word

TID = "F5jvdzGnYi"
SECRET = "s3cret-Path_Token-0123456789abcdefXYZ"
OTHER_SECRET = "another-jobs-secret-0123456789abcdef"
MAX_BODY = 2048

#: The provider's own example, verbatim (trailing spaces and the invalid trailing comma included).
PROVIDER_EXAMPLE = (
    '{  \n "status": "success",  \n "training_status": "deploying_gpu",  \n'
    ' "logs": "it will take upto 25 minutes",  \n "model_id": "F5jvdzGnYi",  \n}  \n'
)


def no_provider_calls(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the webhook receiver must not call the provider ({request.url.path})")


@dataclass
class Harness:
    server: WebhookServer
    store: SqliteStore
    client: httpx.AsyncClient
    wakeups: list[int]
    base: str

    async def post(self, job_id: int | str, secret: str, body: object = None, **kwargs) -> httpx.Response:
        if body is not None and "content" not in kwargs:
            kwargs["json"] = body
        return await self.client.post(f"/webhooks/training/{job_id}/{secret}", **kwargs)

    async def job(self, job_id: int) -> Job:
        return await self.store.require_job(job_id)

    async def writes(self) -> tuple[int, dict[str, int]]:
        """total_changes() of the connection and the row count of every table."""
        changes = (await self.store.db.fetchone("SELECT total_changes()"))[0]
        counts = {
            table: (await self.store.db.fetchone(f"SELECT COUNT(*) FROM {table}"))[0]
            for table in ("jobs", "job_events", "outbox", "users", "kv")
        }
        return changes, counts

    async def dm_keys(self) -> list[str]:
        rows = await self.store.db.fetchall("SELECT dedupe_key FROM outbox WHERE kind = 'dm' ORDER BY id")
        return [row[0] for row in rows]

    @contextmanager
    def database_calls(self) -> Iterator[DatabaseCalls]:
        """Records every call the server makes to the store and the database inside the block."""
        calls = DatabaseCalls()
        targets = [
            (self.store, ("get_job", "require_job", "apply_event")),
            (self.store.db, ("fetchone", "fetchall", "run_transaction", "transaction", "ping")),
        ]
        originals = [(obj, name, getattr(obj, name)) for obj, names in targets for name in names]

        def spy(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def called(*args: Any, **kwargs: Any) -> Any:
                calls.names.append(name)
                return original(*args, **kwargs)

            return called

        for obj, name, original in originals:
            setattr(obj, name, spy(name, original))
        try:
            yield calls
        finally:
            for obj, name, _original in originals:
                delattr(obj, name)  # the instance attribute goes; the class's method shows again


@dataclass
class DatabaseCalls:
    names: list[str] = field(default_factory=list)


@pytest.fixture
async def hooks(store: SqliteStore, settings, make_provider) -> AsyncIterator[Harness]:
    wakeups: list[int] = []
    service = JobService(store, make_provider(no_provider_calls), settings, on_outbox=lambda: wakeups.append(1))
    server = WebhookServer(
        service,
        store,
        database=store.db,
        max_body_bytes=MAX_BODY,
        rate_per_minute=600,
        discord_status=lambda: "connected",
    )
    await server.start("127.0.0.1", 0)
    assert server.port
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        try:
            yield Harness(server, store, client, wakeups, base)
        finally:
            await server.stop()


async def make_job(store: SqliteStore, *, secret: str = SECRET, training_id: str | None = TID, owner: int = 1) -> Job:
    """A submitted job expecting webhooks; accepted with `training_id` unless it is None (still submitting)."""
    from bot.jobs.transitions import plan_transition

    job = await store.create_job(owner_id=owner, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    await store.set_card(job.id, 2, 9000 + job.id)  # the Start flow posts the card next
    await store.prepare_submission(job.id, image_urls=["https://cdn/x.png"], secret_hash=hash_secret(secret))
    if training_id is not None:
        event = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)
        await store.apply_event(job.id, event, plan_transition)
    return await store.require_job(job.id)


def body(word: str, model_id: str = TID, **extra: object) -> dict[str, object]:
    return {"status": "success", "training_status": word, "logs": "log line", "model_id": model_id, **extra}


# -- accepted ---------------------------------------------------------------------------------------


async def test_a_valid_webhook_is_persisted_and_answered_quickly(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    started = time.perf_counter()
    response = await hooks.post(job.id, SECRET, body("training_started"))
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert response.json() == {"ok": True, "state": "training_started"}
    assert elapsed < 1.0
    after = await hooks.job(job.id)
    assert after.state is JobState.TRAINING_STARTED
    event = (await hooks.store.events_for_job(job.id))[-1]
    assert (event.status, event.source, event.applied) == ("training_started", EventSource.WEBHOOK, True)
    assert json.loads(event.payload)["training_status"] == "training_started"
    assert hooks.wakeups == [1]  # the outbox worker is nudged; Discord work happens there


async def test_the_providers_literal_example_with_a_trailing_comma_is_accepted(hooks: Harness) -> None:
    job = await make_job(hooks.store, training_id=None)  # the webhook beat the submit response
    response = await hooks.post(
        job.id, SECRET, content=PROVIDER_EXAMPLE.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    after = await hooks.job(job.id)
    assert after.state is JobState.DEPLOYING_GPU
    assert after.training_id == TID
    assert (await hooks.store.events_for_job(job.id))[-1].payload == PROVIDER_EXAMPLE


async def test_a_charset_in_the_content_type_is_fine(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    response = await hooks.post(
        job.id,
        SECRET,
        content=json.dumps(body("training_started")).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


async def test_duplicates_and_out_of_order_never_move_back_nor_repeat_dms(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    answers = []
    for word in ("training_started", "deploying_gpu", "training_started", "trained_model_uploaded", "training_success"):
        response = await hooks.post(job.id, SECRET, body(word))
        answers.append((response.status_code, response.json()["state"]))
    assert answers == [
        (200, "training_started"),
        (200, "training_started"),
        (200, "training_started"),
        (200, "trained_model_uploaded"),
        (200, "trained_model_uploaded"),
    ]
    for _ in range(3):
        await hooks.post(job.id, SECRET, body("model_ready"))
    after = await hooks.job(job.id)
    assert after.state is JobState.MODEL_READY
    assert await hooks.dm_keys() == [f"dm:{job.id}:model_ready"]
    statuses = [e.status for e in await hooks.store.events_for_job(job.id)]
    assert len(statuses) == len(set(statuses))
    card_rows = await hooks.store.db.fetchall("SELECT COUNT(*) FROM outbox WHERE kind = 'card'")
    assert card_rows[0][0] == 1  # coalesced


async def test_concurrent_deliveries_of_the_same_webhook(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    responses = await asyncio.gather(*(hooks.post(job.id, SECRET, body("model_ready")) for _ in range(5)))
    assert [r.status_code for r in responses] == [200] * 5  # the provider expects duplicates: all 2xx
    assert {r.json()["state"] for r in responses} == {"model_ready"}
    assert (await hooks.job(job.id)).state is JobState.MODEL_READY
    assert await hooks.dm_keys() == [f"dm:{job.id}:model_ready"]


async def test_a_generic_failure_payload_fails_the_job(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    payload = {"status": "failed", "id": TID, "message": "GPU out of memory", "track_id": "x"}
    response = await hooks.post(job.id, SECRET, payload)
    assert response.status_code == 200
    after = await hooks.job(job.id)
    assert after.state is JobState.FAILED
    assert after.last_error == "GPU out of memory"
    assert await hooks.dm_keys() == [f"dm:{job.id}:failed"]


async def test_a_webhook_for_an_uncertain_job_adopts_its_training_id(hooks: Harness) -> None:
    from bot.jobs.transitions import plan_transition

    job = await make_job(hooks.store, training_id=None)
    await hooks.store.apply_event(job.id, Event(Action.UNCERTAIN, EventSource.SYSTEM), plan_transition)
    response = await hooks.post(job.id, SECRET, body("training_started", model_id="LATE987zz"))
    assert response.status_code == 200
    after = await hooks.job(job.id)
    assert (after.state, after.training_id) == (JobState.TRAINING_STARTED, "LATE987zz")
    # From now on the adopted id is the one that must match.
    assert (await hooks.post(job.id, SECRET, body("training_success", model_id=TID))).status_code == 409


# -- rejected: nothing written ------------------------------------------------------------------------


async def assert_rejected_without_writes(hooks: Harness, status: int, *args, **kwargs) -> httpx.Response:
    before = await hooks.writes()
    response = await hooks.post(*args, **kwargs)
    assert response.status_code == status, response.text
    assert await hooks.writes() == before
    assert hooks.wakeups == []
    return response


async def test_unknown_job_wrong_secret_and_another_jobs_secret_are_404_without_writes(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    other = await make_job(hooks.store, secret=OTHER_SECRET, training_id="OTHERjob01", owner=2)
    hooks.wakeups.clear()
    cases = [
        (job.id + other.id + 100, SECRET),  # no such job
        (job.id, SECRET[:-1] + "Q"),  # wrong secret
        (job.id, OTHER_SECRET),  # another job's (valid) secret
        (other.id, SECRET),
        ("abc", SECRET),  # not a job id
        ("9" * 30, SECRET),
        (job.id, "short"),  # not shaped like a secret
        (job.id, "x" * 200),
    ]
    for job_id, secret in cases:
        response = await assert_rejected_without_writes(hooks, 404, job_id, secret, body("model_ready"))
        assert response.content == b"", (job_id, secret)
    assert (await hooks.job(job.id)).state is JobState.DEPLOYING_GPU


async def test_a_job_without_a_secret_rejects_every_secret(hooks: Harness) -> None:
    job = await hooks.store.create_job(owner_id=1, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    response = await assert_rejected_without_writes(hooks, 404, job.id, SECRET, body("deploying_gpu"))
    assert response.content == b""


async def test_a_model_id_mismatch_is_409_without_writes(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    await assert_rejected_without_writes(hooks, 409, job.id, SECRET, body("model_ready", model_id="SOMEONEELSE"))
    await assert_rejected_without_writes(hooks, 409, job.id, SECRET, {"training_status": "model_ready"})
    assert (await hooks.job(job.id)).state is JobState.DEPLOYING_GPU


async def test_a_model_id_mismatch_for_a_finished_job_is_still_409_without_writes(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    assert (await hooks.post(job.id, SECRET, body("model_ready"))).status_code == 200
    hooks.wakeups.clear()
    response = await assert_rejected_without_writes(hooks, 409, job.id, SECRET, body("failed", model_id="NOTMINE01"))
    assert response.json() == {"error": "model_id does not match this job"}
    hooks.server._known.clear()  # the same when the job has to be read first
    await assert_rejected_without_writes(hooks, 409, job.id, SECRET, body("failed", model_id="NOTMINE01"))


# -- authentic but finished: 2xx, nothing written --------------------------------------------------------

FINISHED = {"ok": True, "state": "model_ready", "ignored": "job already finished"}


async def assert_answered_without_writes(hooks: Harness, *args, **kwargs) -> tuple[httpx.Response, list[str]]:
    """Posts; asserts a 200 that wrote nothing; returns it and the database calls the server made."""
    before = await hooks.writes()
    with hooks.database_calls() as calls:
        response = await hooks.post(*args, **kwargs)
    assert response.status_code == 200, response.text
    assert await hooks.writes() == before
    assert hooks.wakeups == []
    return response, calls.names


async def test_duplicate_and_late_webhooks_for_a_finished_job_are_200_from_memory(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    assert (await hooks.post(job.id, SECRET, body("model_ready"))).json() == {"ok": True, "state": "model_ready"}
    hooks.wakeups.clear()
    # A duplicate model_ready, late progress, a late failure: all authentic, all 200, nothing written,
    # and no database access at all (the job is remembered as finished since its model_ready).
    for word in ("model_ready", "training_started", "deploying_model", "failed"):
        response, calls = await assert_answered_without_writes(hooks, job.id, SECRET, body(word))
        assert response.json() == FINISHED
        assert calls == [], word
    assert (await hooks.job(job.id)).state is JobState.MODEL_READY
    assert [e.status for e in await hooks.store.events_for_job(job.id)].count("model_ready") == 1


async def test_a_late_webhook_for_a_job_not_in_memory_reads_it_once_and_writes_nothing(hooks: Harness) -> None:
    from bot.jobs.transitions import plan_transition

    job = await make_job(hooks.store)
    cancel = Event(Action.CANCEL, EventSource.USER, detail="Cancelled by its owner.")
    assert (await hooks.store.apply_event(job.id, cancel, plan_transition)).after.state is JobState.CANCELLED
    response, calls = await assert_answered_without_writes(hooks, job.id, SECRET, body("training_started"))
    assert response.json() == {**FINISHED, "state": "cancelled"}
    assert calls == ["get_job", "fetchone", "fetchall"]  # one read, no transaction
    assert hooks.server._known[job.id] == KnownJob(hash_secret(SECRET), TID, 1, "cancelled")
    _response, calls = await assert_answered_without_writes(hooks, job.id, SECRET, body("model_ready"))
    assert calls == []


async def test_a_job_finished_elsewhere_is_answered_200_when_the_transaction_finds_it_finished(
    hooks: Harness,
) -> None:
    job = await make_job(hooks.store)
    assert (await hooks.post(job.id, SECRET, body("training_started"))).status_code == 200
    assert hooks.server._known[job.id].finished is None  # remembered, still running
    # The reconciler's poll finishes the job; the webhook server does not see it happen.
    poll = Event(Action.PROVIDER_STATUS, EventSource.POLL, status="model_ready", training_id=TID)
    await hooks.server.service.record(job.id, poll)
    hooks.wakeups.clear()
    response, calls = await assert_answered_without_writes(hooks, job.id, SECRET, body("deploying_model"))
    assert response.json() == FINISHED
    assert calls == ["apply_event", "run_transaction"]  # refused inside the transaction, unwritten
    assert hooks.server._known[job.id].finished == "model_ready"
    _response, calls = await assert_answered_without_writes(hooks, job.id, SECRET, body("model_ready"))
    assert calls == []


async def test_a_finished_job_without_a_training_id_is_200_without_writes(hooks: Harness) -> None:
    job = await make_job(hooks.store, training_id=None)
    await hooks.server.service.record_failure(job.id, "The provider refused the images.")
    hooks.wakeups.clear()
    response, _calls = await assert_answered_without_writes(
        hooks, job.id, SECRET, body("deploying_gpu", model_id="LATE1")
    )
    assert response.json() == {**FINISHED, "state": "failed"}
    assert (await hooks.job(job.id)).training_id is None


async def test_a_secret_is_read_again_until_the_job_has_a_training_id(hooks: Harness) -> None:
    """Each submission attempt has a new secret: the old one must not be remembered."""
    job = await make_job(hooks.store, training_id=None)
    bad = {"content": b"nope", "headers": {"Content-Type": "application/json"}}
    assert (await hooks.post(job.id, SECRET, **bad)).status_code == 400  # authenticated, then refused
    assert job.id not in hooks.server._known
    await hooks.store.prepare_submission(
        job.id, image_urls=["https://cdn/y.png"], secret_hash=hash_secret(OTHER_SECRET)
    )
    assert (await hooks.post(job.id, SECRET, body("deploying_gpu"))).status_code == 404
    response = await hooks.post(job.id, OTHER_SECRET, body("deploying_gpu"))
    assert response.status_code == 200, response.text
    assert hooks.server._known[job.id] == KnownJob(hash_secret(OTHER_SECRET), TID, 1, None)


async def test_a_job_deleted_since_it_was_remembered_is_404_and_forgotten(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    assert (await hooks.post(job.id, SECRET, body("training_started"))).status_code == 200
    assert job.id in hooks.server._known
    assert await hooks.store.forget_user(1) == 1
    response = await hooks.post(job.id, SECRET, body("training_success"))
    assert (response.status_code, response.content) == (404, b"")
    assert job.id not in hooks.server._known


async def test_a_body_over_the_cap_is_413(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    big = body("training_started", logs="x" * (MAX_BODY + 100))
    await assert_rejected_without_writes(hooks, 413, job.id, SECRET, big)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while reading
        data = json.dumps(big).encode()
        for start in range(0, len(data), 512):
            yield data[start : start + 512]

    await assert_rejected_without_writes(
        hooks, 413, job.id, SECRET, content=chunks(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    "raw",
    [b"not json at all", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'"a string"', b"", b'{"training_status": '],
)
async def test_a_body_that_is_not_a_json_object_is_400(hooks: Harness, raw: bytes) -> None:
    job = await make_job(hooks.store)
    hooks.wakeups.clear()
    response = await assert_rejected_without_writes(
        hooks, 400, job.id, SECRET, content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.json() == {"error": "invalid JSON"}


async def test_a_body_without_a_status_is_400(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    hooks.wakeups.clear()
    response = await assert_rejected_without_writes(hooks, 400, job.id, SECRET, {"status": "success", "model_id": TID})
    assert response.json() == {"error": "missing training_status"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_wrong_content_type_is_415(hooks: Harness, content_type: str | None) -> None:
    job = await make_job(hooks.store)
    hooks.wakeups.clear()
    headers = {"Content-Type": content_type} if content_type else {}
    content = json.dumps(body("training_started")).encode()
    await assert_rejected_without_writes(hooks, 415, job.id, SECRET, content=content, headers=headers)


async def test_while_shutting_down_webhooks_are_refused_without_writes(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    hooks.wakeups.clear()
    hooks.server.accepting = False
    await assert_rejected_without_writes(hooks, 503, job.id, SECRET, body("training_started"))


async def test_a_flood_of_failed_authentication_from_one_address_gets_429_once_the_bucket_is_empty(
    hooks: Harness,
) -> None:
    job = await make_job(hooks.store)
    hooks.wakeups.clear()
    hooks.server.limiter = RateLimiter(rate_per_minute=4, clock=lambda: 1000.0)  # bucket of 10, no refill
    cases = [(job.id, OTHER_SECRET), (job.id + 100, SECRET), ("abc", SECRET), (job.id, "short")]
    for index in range(10):
        await assert_rejected_without_writes(hooks, 404, *cases[index % len(cases)], body("training_started"))
    for job_id, secret in cases:
        response = await assert_rejected_without_writes(hooks, 429, job_id, secret, body("training_started"))
        assert response.json() == {"error": "slow down"}
    assert (await hooks.job(job.id)).state is JobState.DEPLOYING_GPU

    # Another address has its own bucket.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=hooks.base, transport=transport, timeout=5) as other:
        response = await other.post(f"/webhooks/training/{job.id + 100}/{SECRET}", json=body("training_started"))
    assert response.status_code == 404


async def test_over_budget_a_known_job_is_still_served_and_a_wrong_secret_costs_no_database_read(
    hooks: Harness,
) -> None:
    job = await make_job(hooks.store)
    unseen = await make_job(hooks.store, secret=OTHER_SECRET, training_id="UNSEEN0001", owner=2)
    assert (await hooks.post(job.id, SECRET, body("training_started"))).status_code == 200  # now remembered
    hooks.wakeups.clear()
    hooks.server.limiter = RateLimiter(rate_per_minute=4, clock=lambda: 1000.0)
    for _ in range(10):
        await assert_rejected_without_writes(hooks, 404, unseen.id + 100, SECRET, body("training_started"))
    for job_id, secret in [(unseen.id, SECRET), (unseen.id + 100, SECRET), (job.id, OTHER_SECRET), ("x", SECRET)]:
        before = await hooks.writes()
        with hooks.database_calls() as calls:
            response = await hooks.post(job_id, secret, body("training_started"))
        assert response.status_code == 429
        assert calls.names == [], (job_id, secret)
        assert await hooks.writes() == before
    # Over budget, an authentic webhook for a job the server already knows is served as usual...
    response = await hooks.post(job.id, SECRET, body("training_success"))
    assert (response.status_code, response.json()) == (200, {"ok": True, "state": "training_success"})
    # ...and an authentic one for a job it has not seen yet waits like any unknown request.
    hooks.wakeups.clear()
    await assert_rejected_without_writes(hooks, 429, unseen.id, OTHER_SECRET, body("training_started"))


async def test_500_authentic_webhooks_from_one_address_get_no_429(hooks: Harness) -> None:
    """The provider sends everything from a few addresses: its webhooks must not spend the budget."""
    hooks.server.limiter = RateLimiter(rate_per_minute=600, clock=lambda: 1000.0)  # the default: 150, no refill
    jobs = [await make_job(hooks.store, secret=f"{SECRET}-{n:03d}", training_id=f"T{n:04d}") for n in range(50)]
    words = ["training_started", "training_started", "training_success", "trained_model_uploading"]
    words += ["deploying_model", "model_ready", "model_ready", "deploying_model", "failed", "training_success"]
    started = time.perf_counter()
    codes: list[int] = []
    for word in words:  # 10 rounds over the 50 jobs: firsts, duplicates, the finish, late ones
        responses = await asyncio.gather(
            *(hooks.post(j.id, f"{SECRET}-{n:03d}", body(word, model_id=f"T{n:04d}")) for n, j in enumerate(jobs))
        )
        codes += [r.status_code for r in responses]
    assert len(codes) == 500
    assert codes == [200] * 500, {code: codes.count(code) for code in set(codes)}
    assert time.perf_counter() - started < 10  # "within a second" on a quiet machine; the clock is frozen anyway
    assert {(await hooks.job(j.id)).state for j in jobs} == {JobState.MODEL_READY}
    # The budget is untouched: failed authentication still gets its full 150 before the 429s.
    answers = [(await hooks.post(jobs[0].id, OTHER_SECRET, body("training_started"))).status_code for _ in range(151)]
    assert answers == [404] * 150 + [429]


async def test_rejections_never_log_the_secret(hooks: Harness, caplog: pytest.LogCaptureFixture) -> None:
    job = await make_job(hooks.store)
    caplog.set_level(logging.DEBUG)
    await hooks.post(job.id, OTHER_SECRET, body("training_started"))
    await hooks.post(job.id, SECRET, body("training_started", model_id="nope"))
    await hooks.post(job.id, SECRET, body("training_started"))
    server_side = [r for r in caplog.records if r.name.startswith(("bot", "aiohttp"))]  # not the test's client
    text = "\n".join(record.getMessage() for record in server_side)
    assert "webhook rejected" in text
    assert SECRET not in text
    assert OTHER_SECRET not in text


# -- health ---------------------------------------------------------------------------------------------


async def test_healthz_reports_the_database_and_discord(hooks: Harness) -> None:
    response = await hooks.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": "webhooks", "database": True, "discord": "connected"}


async def test_healthz_reports_background_tasks_and_is_503_when_one_is_unhealthy(hooks: Harness) -> None:
    tasks: dict[str, dict[str, object]] = {
        "outbox": {"healthy": True, "restarts": 0},
        "reconciler": {"healthy": True, "last_run": "2026-01-01T00:00:00+00:00"},
    }
    hooks.server.tasks = lambda: tasks
    response = await hooks.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "mode": "webhooks",
        "database": True,
        "discord": "connected",
        "tasks": tasks,
    }

    tasks["reconciler"] = {"healthy": False, "error": "RuntimeError: boom"}
    response = await hooks.client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "mode": "webhooks",
        "database": True,
        "discord": "connected",
        "tasks": tasks,
    }

    def broken() -> dict[str, dict[str, object]]:
        raise RuntimeError("no task list")

    hooks.server.tasks = broken
    response = await hooks.client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (503, "degraded")


async def test_healthz_says_starting_and_what_it_waits_for_until_discord_is_ready(hooks: Harness) -> None:
    """Up but not ready (Discord still connecting): 503 "starting", so a load balancer or an
    orchestrator does not count the bot as serving; the body says which part is not ready."""
    waiting = ["discord"]
    hooks.server.waiting_for = lambda: list(waiting)
    response = await hooks.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "starting" and response.json()["waiting_for"] == ["discord"]

    waiting.clear()  # the first gateway session is up
    response = await hooks.client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (200, "ok")
    assert "waiting_for" not in response.json()

    waiting.append("discord")  # an unhealthy part wins over "starting"
    hooks.server.tasks = lambda: {"notifier": {"healthy": False}}
    response = await hooks.client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (503, "degraded")


async def test_healthz_tasks_come_from_the_constructor(store: SqliteStore, settings, make_provider) -> None:
    service = JobService(store, make_provider(no_provider_calls), settings)
    server = WebhookServer(
        service,
        store,
        database=store.db,
        max_body_bytes=MAX_BODY,
        rate_per_minute=600,
        tasks=lambda: {"outbox": {"healthy": False}},
    )
    await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        assert response.status_code == 503
        assert response.json()["tasks"] == {"outbox": {"healthy": False}}
    finally:
        await server.stop()


async def test_healthz_is_503_when_the_database_is_gone(tmp_path: Path, settings, make_provider, clock) -> None:
    db = await Database.open(str(tmp_path / "health.db"))
    await db.migrate()
    store = SqliteStore(db, now=clock)
    service = JobService(store, make_provider(no_provider_calls), settings)
    server = WebhookServer(service, store, database=store.db, max_body_bytes=MAX_BODY, rate_per_minute=600)
    await server.start("127.0.0.1", 0)
    try:
        await db.close()
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "degraded",
            "mode": "webhooks",
            "database": False,
            "discord": "not started",
        }
    finally:
        await server.stop()


# -- pieces -------------------------------------------------------------------------------------------


def test_rate_limiter_refills_over_time_per_address() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b") is True
    now[0] += 1.0  # 60 per minute: one token a second
    assert limiter.allow("a") is True
    assert limiter.allow("a") is False
    now[0] += 100.0  # refills to the burst, no further
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_exhausted_spends_nothing() -> None:
    limiter = RateLimiter(rate_per_minute=60, burst=2, clock=lambda: 0.0)
    assert limiter.exhausted("a") is False
    assert limiter._buckets == {}  # asking remembers nothing
    assert [limiter.allow("a"), limiter.exhausted("a"), limiter.allow("a"), limiter.exhausted("a")] == [
        True,
        False,
        True,
        True,
    ]
    assert limiter.exhausted("b") is False


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate_per_minute=60, clock=lambda: 0.0)
    for index in range(10_050):
        limiter.allow(f"10.0.{index // 256}.{index % 256}")
    assert len(limiter._buckets) <= 10_001


def test_parse_body() -> None:
    assert parse_body(PROVIDER_EXAMPLE.encode())["model_id"] == TID
    assert parse_body(b'{"a": [1, 2,], }') == {"a": [1, 2]}
    assert parse_body(b'{"text": "a, }"}') == {"text": "a, }"}  # valid JSON is never rewritten
    assert parse_body(b"[1]") is None
    assert parse_body(b"\xff") is None
    assert parse_body(b"{") is None


def test_status_word() -> None:
    assert status_word({"training_status": " Model_Ready "}) == "model_ready"
    assert status_word({"status": "failed", "message": "x"}) == "failed"
    assert status_word({"status": "success"}) is None
    assert status_word({"training_status": "", "status": "error"}) == "error"
    assert status_word({"training_status": 5}) is None


async def test_a_forgotten_owners_jobs_are_no_longer_answered_from_memory(hooks: Harness) -> None:
    from bot.jobs.transitions import plan_transition

    mine = await make_job(hooks.store, owner=1)
    theirs = await make_job(hooks.store, secret=OTHER_SECRET, training_id="OTHERTRAIN", owner=2)
    for job in (mine, theirs):
        cancel = Event(Action.CANCEL, EventSource.USER, detail="Cancelled by its owner.")
        await hooks.store.apply_event(job.id, cancel, plan_transition)
    assert (await hooks.post(mine.id, SECRET, body("model_ready"))).status_code == 200
    assert (await hooks.post(theirs.id, OTHER_SECRET, body("model_ready", "OTHERTRAIN"))).status_code == 200
    assert {mine.id, theirs.id} <= set(hooks.server._known)
    await hooks.store.forget_user(1)
    hooks.server.forget_owner(1)
    assert mine.id not in hooks.server._known and theirs.id in hooks.server._known
    assert (await hooks.post(mine.id, SECRET, body("model_ready"))).status_code == 404
