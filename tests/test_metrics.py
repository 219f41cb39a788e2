"""Metrics: a registry per application, what each component counts, /metrics (format, token,
cheapness), and the state counts the triggers of migration 0004 keep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.delivery.notifier import Notifier
from bot.jobs.delivery_errors import DiscordUnavailable
from bot.jobs.generation_model import NewGeneration
from bot.jobs.model import OutboxDraft
from bot.jobs.reconciler import Reconciler
from bot.jobs.service import JobService
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.metrics import CONTENT_TYPE, Metrics
from bot.provider.client import ProviderClient
from bot.store import Database, load_migrations
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore
from bot.webhooks import WebhookServer
from tests.delivery.test_notifier import ScriptedMessenger, running_job
from tests.store_helpers import enqueue
from tests.test_webhooks import SECRET, TID, body, make_job

KEY = "metrics-test-api-key-0123456789abcdef"
TOKEN = "scrape-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels (parsed with Prometheus's own text parser)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def no_sleep(_seconds: float) -> None:
    return None


# -- the registry and the provider client ----------------------------------------------------------


def test_each_metrics_has_its_own_registry_and_the_global_one_stays_empty() -> None:
    first, second = Metrics(), Metrics()  # the same names twice in one process: no clash
    first.webhook("accepted")
    assert value(first.render().decode(), "lorabot_webhooks_total", outcome="accepted", reason="") == 1
    assert value(second.render().decode(), "lorabot_webhooks_total", outcome="accepted", reason="") is None
    assert b"lorabot_" not in generate_latest(REGISTRY)


@pytest.mark.parametrize(
    ("endpoint", "name"),
    [
        ("lora_fine_tune", "lora_fine_tune"),
        ("fine_tune_status/F5jvdzGnYi", "fine_tune_status"),
        ("cancle_training/123", "cancle_training"),
        ("finetune/delete/abc", "finetune/delete"),
        ("images/fetch/9876", "images/fetch"),
        ("images/text2img", "images/text2img"),
        ("something/new", "other"),
    ],
)
def test_endpoint_names_carry_no_ids(endpoint: str, name: str) -> None:
    from bot.provider.client import endpoint_name

    assert endpoint_name(endpoint) == name


async def test_provider_calls_are_counted_by_endpoint_and_outcome_without_ids_or_the_key() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"status": "success", "training_status": "training_started"}),
            httpx.Response(500, json={"status": "error", "message": "server error"}),
            httpx.Response(500, json={"status": "error", "message": "server error"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("finetune_list"):
            raise httpx.ReadTimeout("slow", request=request)
        return next(answers)

    metrics = Metrics()
    client = ProviderClient(
        "https://sd.example",
        KEY,
        transport=httpx.MockTransport(handler),
        max_attempts=2,
        sleep=no_sleep,
        duplicate_window=0,
        metrics=metrics,
    )
    async with client:
        await client.training_status("F5jvdzGnYi")
        with pytest.raises(Exception):  # noqa: B017 (the error classes are the client's business)
            await client.training_status("Other12345")
        with pytest.raises(Exception):  # noqa: B017
            await client.list_trainings()
    text = metrics.render().decode()
    requests = "lorabot_provider_requests_total"
    assert value(text, requests, endpoint="fine_tune_status", outcome="ok") == 1
    assert value(text, requests, endpoint="fine_tune_status", outcome="server_error") == 2  # retried once
    assert value(text, requests, endpoint="finetune_list", outcome="timeout") == 2
    assert value(text, "lorabot_provider_request_duration_seconds_count", endpoint="fine_tune_status") == 3
    assert KEY not in text and "F5jvdzGnYi" not in text and "Other12345" not in text


# -- the other components ------------------------------------------------------------------------------


async def test_record_counts_changes_by_source_and_new_state_and_nothing_else(store: SqliteStore, settings) -> None:
    metrics = Metrics()
    service = JobService(store, None, settings, metrics=metrics)  # type: ignore[arg-type]
    job = await store.create_job(owner_id=1, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await service.record(job.id, Event(Action.SUBMIT, EventSource.USER))
    accepted = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=TID)
    await service.record(job.id, accepted)
    started = Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="training_started")
    await service.record(job.id, started)
    await service.record(job.id, started)  # a duplicate: no change, not counted
    await service.record(job.id, replace(started, source=EventSource.POLL))  # nor from a poll
    text = metrics.render().decode()
    changes = "lorabot_job_state_changes_total"
    assert value(text, changes, source="user", state="submitting") == 1
    assert value(text, changes, source="system", state="deploying_gpu") == 1
    assert value(text, changes, source="webhook", state="training_started") == 1
    assert value(text, changes, source="poll", state="training_started") is None


async def test_the_notifier_counts_delivery_failures(store: SqliteStore) -> None:
    metrics = Metrics()
    messenger = ScriptedMessenger(errors={"edit": [DiscordUnavailable("503")]})
    notifier = Notifier(store, messenger, edit_interval=0, metrics=metrics)  # type: ignore[arg-type]
    await running_job(store)
    await notifier.deliver_due()
    text = metrics.render().decode()
    assert value(text, "lorabot_discord_delivery_failures_total", kind="card", reason="discord_unavailable") == 1


async def test_the_reconciler_counts_its_passes(store: SqliteStore, settings, clock) -> None:
    metrics = Metrics()
    service = JobService(store, None, settings, metrics=metrics)  # type: ignore[arg-type]
    reconciler = Reconciler(store, service, interval=60, stall_deadline=3600, preview_timeout=600, metrics=metrics)
    await store.create_job(owner_id=1, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    clock.advance(1)
    assert await reconciler.run_once(everything=True) == 1
    await reconciler.run_once()
    text = metrics.render().decode()
    assert value(text, "lorabot_reconciler_passes_total") == 2
    assert value(text, "lorabot_reconciler_jobs_checked_total") == 1


# -- /metrics ------------------------------------------------------------------------------------


async def serve(store: SqliteStore, settings, metrics: Metrics | None, token: str | None = None) -> WebhookServer:
    service = JobService(store, None, settings, metrics=metrics)  # type: ignore[arg-type]
    server = WebhookServer(
        service, store, database=store.db, max_body_bytes=4096, rate_per_minute=40, metrics=metrics, metrics_token=token
    )
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def scrape(store: SqliteStore, settings) -> AsyncIterator[tuple[WebhookServer, httpx.AsyncClient, Metrics]]:
    metrics = Metrics()
    server = await serve(store, settings, metrics)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
        try:
            yield server, client, metrics
        finally:
            await server.stop()


async def test_metrics_page_has_the_store_gauges_and_writes_nothing(scrape, store: SqliteStore, clock) -> None:
    _server, client, _metrics = scrape
    running = await running_job(store)  # submitting, then deploying_gpu: a card item in the outbox
    await store.create_job(owner_id=1, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await enqueue(store, running.id, OutboxDraft("dm", "dm:test", {}))
    clock.advance(90)
    changes = (await store.db.fetchone("SELECT total_changes()"))[0]
    response = await client.get("/metrics")
    assert (await store.db.fetchone("SELECT total_changes()"))[0] == changes  # a scrape writes nothing
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    text = response.text
    assert value(text, "lorabot_jobs", state="deploying_gpu") == 1
    assert value(text, "lorabot_jobs", state="preview") == 1
    assert value(text, "lorabot_jobs", state="model_ready") == 0  # every state is there, even at 0
    assert value(text, "lorabot_generations", state="queued") == 0
    assert value(text, "lorabot_outbox_pending") == 2
    assert value(text, "lorabot_outbox_oldest_age_seconds") == 90


async def test_webhooks_are_counted_by_outcome(scrape, store: SqliteStore) -> None:
    _server, client, _metrics = scrape
    job = await make_job(store)
    hook = f"/webhooks/training/{job.id}"
    assert (await client.post(f"{hook}/{SECRET}", json=body("training_started"))).status_code == 200
    assert (await client.post(f"{hook}/{SECRET}", json=body("training_started"))).status_code == 200
    assert (await client.post(f"{hook}/{SECRET}", json=body("model_ready"))).status_code == 200
    assert (await client.post(f"{hook}/{SECRET}", json=body("model_ready"))).status_code == 200
    assert (await client.post(f"{hook}/wrong-secret-0123456789abc", json=body("x"))).status_code == 404
    assert (await client.post(f"{hook}/{SECRET}", content=b"{nope", headers=JSON)).status_code == 400
    assert (await client.post(f"{hook}/{SECRET}", content=b"{}", headers={"content-type": "text/plain"})).status_code
    text = (await client.get("/metrics")).text
    webhooks = "lorabot_webhooks_total"
    assert value(text, webhooks, outcome="accepted", reason="") == 2
    assert value(text, webhooks, outcome="duplicate", reason="") == 1
    assert value(text, webhooks, outcome="ignored", reason="") == 1
    assert value(text, webhooks, outcome="refused", reason="unauthenticated") == 1
    assert value(text, webhooks, outcome="refused", reason="invalid_json") == 1
    assert value(text, webhooks, outcome="refused", reason="content_type") == 1
    assert value(text, "lorabot_job_state_changes_total", source="webhook", state="model_ready") == 1
    assert SECRET not in text


JSON = {"content-type": "application/json"}


async def test_the_bearer_token_is_enforced(store: SqliteStore, settings) -> None:
    server = await serve(store, settings, Metrics(), token=TOKEN)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            for headers in (
                {},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": TOKEN},
            ):
                refused = await client.get("/metrics", headers=headers)
                assert refused.status_code == 401, headers
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "lorabot_" not in refused.text
            allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert allowed.status_code == 200
            assert value(allowed.text, "lorabot_jobs", state="preview") == 0
            assert (await client.get("/metrics", headers={"authorization": f"bearer {TOKEN}"})).status_code == 200
            # Wrong tokens spend the address's budget (capacity 10 at 40 a minute) like forged webhooks.
            statuses = [(await client.get("/metrics", headers={"Authorization": "Bearer x"})).status_code]
            statuses += [(await client.get("/metrics")).status_code for _ in range(10)]
            assert statuses[:5] == [401] * 5 and statuses[-1] == 429
    finally:
        await server.stop()


async def test_metrics_can_be_left_unserved(store: SqliteStore, settings) -> None:
    server = await serve(store, settings, None)  # METRICS_ENABLED=false: the app passes no metrics
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await server.stop()


# -- the state counts ---------------------------------------------------------------------------------


async def grouped(db: Database, table: str) -> dict[str, int]:
    rows = await db.fetchall(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")
    return {row[0]: row[1] for row in rows}


async def counted(store: SqliteStore, entity: str) -> dict[str, int]:
    return {state: n for state, n in (await store.state_counts()).get(entity, {}).items() if n}


def new_generation(job_id: int, owner: int) -> NewGeneration:
    return NewGeneration(
        job_id=job_id,
        owner_id=owner,
        guild_id=1,
        channel_id=2,
        kind="imagine",
        user_prompt="p",
        prompt="p",
        negative_prompt=None,
        strength=0.8,
        samples=1,
        seed=1,
        width=512,
        height=512,
        base_model_id="b",
        lora_model="l",
        safety_checker=True,
        age_restricted=False,
    )


async def test_state_counts_follow_every_insert_change_and_deletion(store: SqliteStore) -> None:
    from bot.jobs.generations import GenerationEvent, plan_generation

    generations = SqliteGenerationStore(store.db, now=store.now)
    jobs = [await running_job(store, owner=owner) for owner in (1, 1, 2)]
    await store.create_job(owner_id=2, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await store.apply_event(
        jobs[0].id, Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="model_ready"), plan_transition
    )
    await store.apply_event(jobs[1].id, Event(Action.CANCEL, EventSource.USER), plan_transition)
    for job in jobs:
        created = await generations.create(new_generation(job.id, job.owner_id))
        if job is jobs[0]:
            await generations.apply(created.id, lambda g: plan_generation(g, GenerationEvent("submit"), store.now()))
    assert (
        await counted(store, "jobs")
        == await grouped(store.db, "jobs")
        == {
            "model_ready": 1,
            "cancelled": 1,
            "deploying_gpu": 1,
            "preview": 1,
        }
    )
    assert (
        await counted(store, "generations")
        == await grouped(store.db, "generations")
        == {
            "submitting": 1,
            "queued": 2,
        }
    )
    await store.forget_user(1)  # deletes jobs, and their generations by cascade
    assert await counted(store, "jobs") == await grouped(store.db, "jobs") == {"deploying_gpu": 1, "preview": 1}
    assert await counted(store, "generations") == await grouped(store.db, "generations") == {"queued": 1}


async def test_the_migration_counts_the_rows_already_there(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "old.db"))
    try:
        migrations = load_migrations()
        await db.migrate([m for m in migrations if m.version < 4])
        store = SqliteStore(db)
        for owner in (1, 2, 3):
            job = await store.create_job(owner_id=owner, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
        await store.apply_event(job.id, Event(Action.EXPIRE, EventSource.USER), plan_transition)
        await db.migrate(migrations)
        assert await counted(store, "jobs") == {"preview": 2, "expired": 1}
        assert JobState.EXPIRED.value in (await store.state_counts())["jobs"]
    finally:
        await db.close()
