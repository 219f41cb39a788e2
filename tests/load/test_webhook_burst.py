"""1000 provider webhooks in a burst across 100 jobs, over real loopback HTTP to the real server.

Every job is in the provider's hands (submitted, accepted with a training id, a known webhook
secret). Each gets its 8 documented statuses plus 2 duplicates, all shuffled with a seeded RNG so
they arrive out of order, sent by 50 concurrent connections while /healthz is polled every 20 ms.

What must hold:
- every webhook is answered 2xx (the provider expects to send duplicates and late ones, and may
  retry or hold a non-2xx against the endpoint); one that arrived after the job's model_ready had
  been applied is answered 200 "ignored: job already finished" and writes nothing; no 409, no
  5xx, no 429 (the server runs with the default per-address rate limit, 600 a minute: all 1000
  come from one address, and authentic webhooks never spend that budget), no connection error;
- nothing lost: each status answered 2xx (and not ignored) is in the job's events table (a
  repeated status is, by the schema's UNIQUE (job_id, status), stored once);
- each job ends in model_ready; the events that moved it are in strictly increasing rank order
  (the job never moved backwards);
- exactly one DM outbox item per job (dm:{id}:model_ready), and one DM delivered per job;
- every /healthz poll is answered 200 during the burst;
- (second test) no event row is written after a job's model_ready was applied, although the late
  webhooks for it were answered 200.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import httpx

from bot.jobs.model import Job, JobEvent
from bot.jobs.service import TrainingParams, hash_secret
from bot.jobs.states import PROVIDER_PROGRESS, RANK, Action, Event, EventSource, JobState
from tests.e2e.harness import CHANNEL, GUILD, World
from tests.load.conftest import GcPauses, LoopLagProbe, WorldFactory, percentile, report
from tests.store_helpers import pending_outbox_count

SEED = 20_240_601
JOBS = 100
DUPLICATES_PER_JOB = 2
CONNECTIONS = 50
HEALTHZ_EVERY = 0.020
OWNERS = [70_000_000_000_000_000 + i for i in range(10)]
STATUSES = [state.value for state in PROVIDER_PROGRESS]
RANK_OF = {state.value: rank for state, rank in RANK.items()}


@dataclass
class Sent:
    job_id: int
    status: str
    sent_at: float = 0.0
    done_at: float = 0.0
    http_status: int | None = None
    body: Any = None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.done_at - self.sent_at

    @property
    def ignored(self) -> bool:
        """Answered 2xx as authentic but late: the job had already finished, nothing was written."""
        return self.http_status == 200 and isinstance(self.body, dict) and "ignored" in self.body


async def submitted_jobs(world: World, rng: random.Random) -> dict[int, tuple[str, str, int]]:
    """JOBS jobs accepted by the provider: job id -> (webhook secret, training id, owner)."""
    for owner in OWNERS:
        world.fake.add_user(owner, username=f"owner{owner % 100}")
        world.fake.set_member(GUILD, owner)
    params = TrainingParams(instance_prompt="photo of sks man", class_prompt="photo of a man").as_dict()
    jobs: dict[int, tuple[str, str, int]] = {}
    for index in range(JOBS):
        owner = OWNERS[index % len(OWNERS)]
        job = await world.store.create_job(
            owner_id=owner, guild_id=GUILD, channel_id=CHANNEL, name=f"load {index}", params=params, image_count=5
        )
        assert (await world.app.service.begin_submission(job.id)).after.state is JobState.SUBMITTING
        secret = rng.randbytes(24).hex()
        urls = [f"https://cdn.example.invalid/{job.id}/{i}.jpg" for i in range(5)]
        await world.store.prepare_submission(job.id, image_urls=urls, secret_hash=hash_secret(secret))
        training_id = f"T{job.id:04d}"
        accepted = await world.app.service.record(
            job.id, Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)
        )
        assert accepted.after.state is JobState.DEPLOYING_GPU and accepted.after.training_id == training_id
        jobs[job.id] = (secret, training_id, owner)
    return jobs


async def poll_healthz(url: str, stop: asyncio.Event, latencies: list[float], failures: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = await client.get(url)
            except httpx.HTTPError as error:
                failures.append(f"{type(error).__name__}: {error}")
            else:
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
            await asyncio.sleep(HEALTHZ_EVERY)


@dataclass
class WebhookBurst:
    jobs: dict[int, tuple[str, str, int]]
    deliveries: list[Sent]
    elapsed: float
    health_latencies: list[float]
    health_failures: list[str]
    probe: LoopLagProbe
    gc_pauses: GcPauses
    events: dict[int, list[JobEvent]]
    final: dict[int, Job]
    dm_outbox: Counter[tuple[int, str]]
    pending_outbox: int
    failed_outbox: list[tuple[str, str]]
    drain_seconds: float

    @property
    def ok(self) -> list[Sent]:
        return [i for i in self.deliveries if i.http_status is not None and 200 <= i.http_status < 300]

    @property
    def ignored(self) -> list[Sent]:
        return [i for i in self.deliveries if i.ignored]

    def after_terminal(self, job_id: int) -> list[JobEvent]:
        """Event rows written after the job's model_ready was applied."""
        ready = [e.id for e in self.events[job_id] if e.applied and e.status == JobState.MODEL_READY.value]
        return [e for e in self.events[job_id] if ready and e.id > ready[0]]

    def summary(self) -> dict[str, object]:
        latencies = [i.latency for i in self.deliveries]
        health = self.health_latencies or [0.0]
        applied = [sum(1 for e in events if e.applied) for events in self.events.values()]
        return {
            "webhooks": len(self.deliveries),
            "jobs": JOBS,
            "connections": CONNECTIONS,
            "answered_2xx": len(self.ok),
            "answered_2xx_ignored_late": len(self.ignored),
            "other_answers": len(self.deliveries) - len(self.ok),
            "recorded_after_terminal": sum(len(self.after_terminal(job_id)) for job_id in self.jobs),
            "burst_seconds": round(self.elapsed, 3),
            "throughput_per_s": round(len(self.deliveries) / self.elapsed, 1),
            "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "latency_max_ms": round(max(latencies) * 1000, 1),
            "healthz_polls": len(self.health_latencies),
            "healthz_failures": len(self.health_failures),
            "healthz_p50_ms": round(percentile(health, 0.50) * 1000, 1),
            "healthz_max_ms": round(max(health) * 1000, 1),
            "loop_lag_max_ms": round(self.probe.max * 1000, 1),
            "loop_lag_p99_ms": round(self.probe.p(0.99) * 1000, 1),
            "gc_gen2_collections": self.gc_pauses.count(2),
            "gc_gen2_max_pause_ms": round(self.gc_pauses.max(2) * 1000, 1),
            "applied_events_per_job_min": min(applied),
            "applied_events_per_job_max": max(applied),
            "outbox_drain_seconds": round(self.drain_seconds, 2),
        }


async def run_webhook_burst(world: World) -> WebhookBurst:
    """Fire the shuffled 1000 webhooks through CONNECTIONS connections while polling /healthz."""
    rng = random.Random(SEED)
    jobs = await submitted_jobs(world, rng)
    deliveries = [Sent(job_id, status) for job_id in jobs for status in STATUSES]
    deliveries += [Sent(job_id, status) for job_id in jobs for status in rng.sample(STATUSES, DUPLICATES_PER_JOB)]
    rng.shuffle(deliveries)
    assert len(deliveries) == JOBS * (len(STATUSES) + DUPLICATES_PER_JOB) == 1000

    base = world.settings.public_url
    queue = iter(deliveries)

    async def sender(client: httpx.AsyncClient) -> None:
        for item in queue:  # a shared iterator: the senders take the shuffled list in order
            secret, training_id, _owner = jobs[item.job_id]
            body = {"status": "success", "training_status": item.status, "logs": "", "model_id": training_id}
            item.sent_at = time.perf_counter()
            try:
                response = await client.post(f"{base}/webhooks/training/{item.job_id}/{secret}", json=body)
            except httpx.HTTPError as error:
                item.error = f"{type(error).__name__}: {error}"
            else:
                item.http_status = response.status_code
                item.body = response.json() if response.content else None
            item.done_at = time.perf_counter()

    health_latencies: list[float] = []
    health_failures: list[str] = []
    stop = asyncio.Event()
    health = asyncio.create_task(poll_healthz(f"{base}/healthz", stop, health_latencies, health_failures))
    probe = LoopLagProbe()
    with GcPauses() as gc_pauses:
        probe.start()
        await asyncio.sleep(0.1)  # a few healthz answers before the burst
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(sender(client) for _ in range(CONNECTIONS))), 45)
            elapsed = time.perf_counter() - started
        await asyncio.sleep(0.1)
        stop.set()
        await health
        await probe.stop()

    # The notifier delivers the card edits and DMs meanwhile; give it a bounded time to finish.
    drain_started = time.perf_counter()
    for _ in range(600):  # at most ~30 s
        if not await pending_outbox_count(world.store):
            break
        await asyncio.sleep(0.05)
    drain_seconds = time.perf_counter() - drain_started

    rows = await world.store.db.fetchall("SELECT job_id, dedupe_key FROM outbox WHERE kind = 'dm'")
    failed = await world.store.db.fetchall("SELECT dedupe_key, last_error FROM outbox WHERE last_error IS NOT NULL")
    return WebhookBurst(
        jobs=jobs,
        deliveries=deliveries,
        elapsed=elapsed,
        health_latencies=health_latencies,
        health_failures=health_failures,
        probe=probe,
        gc_pauses=gc_pauses,
        events={job_id: await world.store.events_for_job(job_id) for job_id in jobs},
        final={job_id: await world.store.require_job(job_id) for job_id in jobs},
        dm_outbox=Counter((row["job_id"], row["dedupe_key"]) for row in rows),
        pending_outbox=await pending_outbox_count(world.store),
        failed_outbox=[(row["dedupe_key"], row["last_error"]) for row in failed],
        drain_seconds=drain_seconds,
    )


async def test_webhook_burst_across_100_jobs(make_world: WorldFactory, record_property: Any) -> None:
    world: World = await make_world()  # the default per-address rate limit: 600 a minute, bursts of 150
    assert world.settings.webhook_rate_limit_per_minute == 600
    burst = await run_webhook_burst(world)
    report(record_property, "webhook burst", burst.summary())
    deliveries, ok, ignored = burst.deliveries, burst.ok, burst.ignored

    # -- the HTTP answers: all 2xx (late ones too); no 409, 5xx, 429 or connection error ----------
    codes = Counter(item.http_status for item in deliveries)
    errors = [f"job {i.job_id} {i.status}: {i.error}" for i in deliveries if i.error]
    assert not errors, errors[:10]
    assert len(ok) == len(deliveries), f"only 2xx allowed, got {dict(codes)}"
    finished = {"ok": True, "state": JobState.MODEL_READY.value, "ignored": "job already finished"}
    assert all(i.body == finished for i in ignored), [i.body for i in ignored][:5]
    # Ignored only after that job's model_ready was applied: model_ready must have been answered
    # (not ignored), and sent before the ignored answer came back.
    ready_sent: dict[int, float] = {}
    for item in ok:
        if item.status == JobState.MODEL_READY.value and not item.ignored:
            ready_sent[item.job_id] = min(item.sent_at, ready_sent.get(item.job_id, item.sent_at))
    early = [i for i in ignored if i.job_id not in ready_sent or i.done_at < ready_sent[i.job_id]]
    assert not early, [(i.job_id, i.status) for i in early][:10]
    # The seeded shuffle puts statuses after model_ready for most jobs: the late path was exercised.
    assert len(ignored) >= 50, len(ignored)

    # -- the database: nothing lost, each status once, applied in rank order, model_ready last --
    accepted_statuses: dict[int, set[str]] = defaultdict(set)
    for item in ok:
        if not item.ignored:
            accepted_statuses[item.job_id].add(item.status)
    for job_id, (_secret, training_id, _owner) in burst.jobs.items():
        job = burst.final[job_id]
        assert job.state is JobState.MODEL_READY, f"job {job_id} ended {job.state}"
        assert job.training_id == training_id and job.finished_at is not None
        events = burst.events[job_id]
        statuses = [e.status for e in events]
        assert len(statuses) == len(set(statuses)), f"job {job_id}: a status recorded twice: {statuses}"
        missing = accepted_statuses[job_id] - set(statuses)
        assert not missing, f"job {job_id}: webhooks answered 2xx but not persisted: {missing}"
        applied = [e for e in sorted(events, key=lambda e: e.id) if e.applied]
        ranks = [RANK_OF[e.status] for e in applied]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks), f"job {job_id} moved backwards: {applied}"
        assert applied[-1].status == JobState.MODEL_READY.value, f"job {job_id}: {applied}"

    # -- exactly one DM per job: one outbox item, one message delivered ---------------------------
    assert burst.dm_outbox == Counter({(job_id, f"dm:{job_id}:model_ready"): 1 for job_id in burst.jobs})
    assert burst.pending_outbox == 0, f"{burst.pending_outbox} outbox items still pending after 30 s"
    assert not burst.failed_outbox, burst.failed_outbox[:5]
    for job_id, (_secret, training_id, owner) in burst.jobs.items():
        texts = [t for t in world.dm_texts(owner) if training_id in t]
        assert len(texts) == 1, f"job {job_id}: {len(texts)} DMs mention {training_id}"

    # -- the server answered throughout ----------------------------------------------------------
    assert not burst.health_failures, burst.health_failures[:5]
    assert len(burst.health_latencies) >= 5


async def test_webhooks_after_model_ready_are_answered_without_writing(
    make_world: WorldFactory, record_property: Any
) -> None:
    world: World = await make_world()
    burst = await run_webhook_burst(world)
    report(record_property, "webhook burst (after terminal)", burst.summary())
    assert all(burst.final[job_id].state is JobState.MODEL_READY for job_id in burst.jobs)
    assert burst.ignored, "no webhook arrived after its job had finished: the test exercised nothing"
    written = {job_id: [e.status for e in burst.after_terminal(job_id)] for job_id in burst.jobs}
    written = {job_id: statuses for job_id, statuses in written.items() if statuses}
    assert not written, (
        f"{sum(map(len, written.values()))} webhooks on {len(written)} jobs were written after the job "
        f"had finished, e.g. {list(written.items())[:3]}"
    )
