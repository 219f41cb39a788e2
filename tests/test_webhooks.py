"""The webhook receiver over real loopback HTTP: accepted webhooks persist; rejected ones write nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.jobs.service import JobService, hash_secret
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.store import Database, Job, Store
from bot.webhooks import RateLimiter, WebhookServer, parse_body, status_word

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
    store: Store
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


@pytest.fixture
async def hooks(store: Store, settings, make_provider) -> AsyncIterator[Harness]:
    wakeups: list[int] = []
    service = JobService(store, make_provider(no_provider_calls), settings, on_outbox=lambda: wakeups.append(1))
    server = WebhookServer(
        service, store, max_body_bytes=MAX_BODY, rate_per_minute=600, discord_status=lambda: "connected"
    )
    await server.start("127.0.0.1", 0)
    assert server.port
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        try:
            yield Harness(server, store, client, wakeups, base)
        finally:
            await server.stop()


async def make_job(store: Store, *, secret: str = SECRET, training_id: str | None = TID, owner: int = 1) -> Job:
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
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 200
    assert set(codes) <= {200, 409}
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


async def test_a_finished_job_is_409_without_writes(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    assert (await hooks.post(job.id, SECRET, body("model_ready"))).status_code == 200
    hooks.wakeups.clear()
    for word in ("model_ready", "failed", "training_started"):
        response = await assert_rejected_without_writes(hooks, 409, job.id, SECRET, body(word))
        assert response.json() == {"error": "job already finished"}


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


async def test_a_flood_from_one_address_gets_429_once_the_bucket_is_empty(hooks: Harness) -> None:
    job = await make_job(hooks.store)
    hooks.wakeups.clear()
    hooks.server.limiter = RateLimiter(rate_per_minute=4, clock=lambda: 1000.0)  # bucket of 10, no refill
    for _ in range(10):
        await assert_rejected_without_writes(hooks, 404, job.id, OTHER_SECRET, body("training_started"))
    response = await assert_rejected_without_writes(hooks, 429, job.id, SECRET, body("training_started"))
    assert response.json() == {"error": "slow down"}
    assert (await hooks.job(job.id)).state is JobState.DEPLOYING_GPU

    # Another address has its own bucket.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=hooks.base, transport=transport, timeout=5) as other:
        response = await other.post(f"/webhooks/training/{job.id}/{SECRET}", json=body("training_started"))
    assert response.status_code == 200


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
    assert response.json() == {"status": "ok", "database": True, "discord": "connected"}


async def test_healthz_is_503_when_the_database_is_gone(tmp_path: Path, settings, make_provider, clock) -> None:
    db = await Database.open(str(tmp_path / "health.db"))
    await db.migrate()
    store = Store(db, now=clock)
    service = JobService(store, make_provider(no_provider_calls), settings)
    server = WebhookServer(service, store, max_body_bytes=MAX_BODY, rate_per_minute=600)
    await server.start("127.0.0.1", 0)
    try:
        await db.close()
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "degraded", "database": False, "discord": "not started"}
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
