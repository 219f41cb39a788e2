"""The webhook HTTP server: training webhooks from the provider, and /healthz.

The provider signs nothing, so each job's webhook URL carries an unguessable secret; only its
hash is stored. Cheap checks come first (content type, size) and a rejected request never writes
to the database. An accepted webhook is persisted through the state machine and answered at
once; Discord work happens later, from the outbox.

The provider retries webhooks and sends duplicates and late ones, all from a few addresses of its
own, and a non-2xx answer may be retried or count against the endpoint. So every *authentic*
webhook (right job, right secret, the job's own model_id) is answered 2xx, including those for
jobs that have already finished (nothing is written for them), and only requests that fail
authentication spend the per-address rate-limit budget.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from bot.jobs.model import Job, JobNotFound, TrainingIdTaken
from bot.jobs.ports import JobStore
from bot.jobs.service import JobService, secret_matches
from bot.jobs.states import FAILURE_WORDS, TERMINAL_STATES, Action, Event, EventSource
from bot.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

_KNOWN_JOBS_SIZE = 50_000
_FINISHED = "job already finished"
#: What the provider is told when the state machine refuses a webhook outright.
_REFUSALS = {"model_id mismatch": "model_id does not match this job"}
#: The answer to an authentic webhook for a finished job, encoded once per terminal state.
_IGNORED = {
    state.value: json.dumps({"ok": True, "state": state.value, "ignored": _FINISHED}).encode()
    for state in TERMINAL_STATES
}
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_SECRET_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")

#: Background-task health by task name; each entry has at least a boolean "healthy".
TaskHealth = Callable[[], Mapping[str, Mapping[str, Any]]]


@dataclass
class RateLimiter:
    """A token bucket per client address: `rate_per_minute` sustained, bursts up to `burst`."""

    rate_per_minute: int
    burst: int = 0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def capacity(self) -> float:
        return float(self.burst or max(10, self.rate_per_minute // 4))

    def _tokens(self, key: str, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - stamp) * self.rate_per_minute / 60.0)

    def exhausted(self, key: str) -> bool:
        """True when `key` has no token left; spends nothing (and remembers nothing)."""
        return key in self._buckets and self._tokens(key, self.clock()) < 1.0

    def allow(self, key: str) -> bool:
        """Spend one token of `key`'s budget; False (nothing spent) when there is none left."""
        now = self.clock()
        tokens = self._tokens(key, now)
        if len(self._buckets) > 10_000:  # forget idle addresses; bounded memory under a spray
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


@dataclass(slots=True)
class KnownJob:
    """What the webhook handler remembers of a job once it has a training id.

    Neither the secret hash nor the training id changes after that (a new secret is made only
    for a new submission attempt, before the provider's answer), and a terminal state is sticky,
    so none of these can go stale; only deletion (/forgetme) can: see `WebhookServer.forget_owner`.
    """

    secret_hash: str
    training_id: str
    owner_id: int
    finished: str | None = None  #: the terminal state, once the job is known to have finished


def parse_body(raw: bytes) -> dict[str, Any] | None:
    """JSON object from the body; tolerates the trailing comma of the provider's own example."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        try:  # only then rewrite: valid JSON is never touched (and costs no substitution)
            value = json.loads(_TRAILING_COMMA.sub(r"\1", text))
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def status_word(body: dict[str, Any]) -> str | None:
    """The training status a webhook reports (`training_status`, or a generic failure payload)."""
    word = body.get("training_status")
    if isinstance(word, str) and word.strip():
        return word.strip().lower()
    generic = body.get("status")
    if isinstance(generic, str) and generic.strip().lower() in FAILURE_WORDS:
        return generic.strip().lower()
    return None


def _text(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _reject(status: int, reason: str, peer: str, job_id: int | None = None) -> web.Response:
    """Log a rejected webhook (never its path: it holds the secret) and answer with the reason."""
    log.warning("webhook rejected (%s): %s, job %s, from %s", status, reason, job_id, peer)
    return _text(status, reason)


def _ignored(state: str, job_id: int) -> web.Response:
    """200 for an authentic webhook about a finished job: nothing is written (DEBUG: it is routine)."""
    log.debug("webhook for finished job %s (%s) ignored", job_id, state)
    return web.Response(body=_IGNORED[state], content_type="application/json")


class Pingable(Protocol):
    async def ping(self) -> bool: ...


_dumps = functools.partial(json.dumps, default=str)


class WebhookServer:
    """Builds the aiohttp application and runs it on the configured host and port."""

    def __init__(
        self,
        service: JobService,
        store: JobStore,
        *,
        database: Pingable,
        max_body_bytes: int,
        rate_per_minute: int,
        discord_status: Callable[[], str] = lambda: "not started",
        tasks: TaskHealth | None = None,
        mode: str = "webhooks",
        metrics: Metrics | None = None,
        metrics_token: str | None = None,
        waiting_for: Callable[[], list[str]] = list,
    ) -> None:
        self.service = service
        self.store = store
        #: What /healthz asks whether the database answers (SQLite or PostgreSQL).
        self.database = database
        #: Webhooks by outcome. `GET /metrics` is served only when `metrics` is given; with
        #: `metrics_token`, only to `Authorization: Bearer <token>`.
        self.metrics = metrics if metrics is not None else Metrics()
        self._serve_metrics = metrics is not None
        self._metrics_token = metrics_token.encode() if metrics_token else None
        self.max_body_bytes = max_body_bytes
        self.limiter = RateLimiter(rate_per_minute)
        self.discord_status = discord_status
        self.tasks = tasks
        #: The parts not ready yet (e.g. ["discord"] until the first session): /healthz says "starting".
        self.waiting_for = waiting_for
        #: How trainings are followed, for /healthz: "webhooks", or "polling" (no PUBLIC_URL).
        self.mode = mode
        #: For /healthz: whether this process leads the once-per-system work, and since when.
        self.leader: Callable[[], Mapping[str, Any]] | None = None
        self.accepting = True
        #: Jobs with a training id, by job id (bounded; the oldest entry goes first).
        self._known: dict[int, KnownJob] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/webhooks/training/{job_id}/{secret}", self.training_webhook)
        app.router.add_get("/healthz", self.healthz)
        if self._serve_metrics:
            app.router.add_get("/metrics", self.metrics_page)
        return app

    async def start(self, host: str, port: int) -> None:
        # No access log: webhook paths carry secrets.
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("webhook server listening on http://%s:%s", host, self.port)

    async def stop(self) -> None:
        """Stop taking webhooks; requests in flight finish their database write first."""
        self.accepting = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        database = await self.database.ping()
        body: dict[str, Any] = {
            "status": "ok",
            "mode": self.mode,
            "database": database,
            "discord": self.discord_status(),
        }
        if self.leader is not None:
            body["leadership"] = dict(self.leader())
        healthy = database
        if self.tasks is not None:
            try:
                tasks = {name: dict(info) for name, info in self.tasks().items()}
            except Exception as error:  # a broken health callback is itself a health problem
                log.exception("background task health unavailable")
                tasks = {"health": {"healthy": False, "error": type(error).__name__}}
            body["tasks"] = tasks
            healthy = healthy and all(info.get("healthy") is True for info in tasks.values())
        waiting = self.waiting_for()
        if waiting:  # e.g. Discord still connecting: webhooks are stored, but members get no answer yet
            body["waiting_for"] = waiting
        if not healthy:
            body["status"] = "degraded"
        elif waiting:
            body["status"] = "starting"
        return web.json_response(body, status=200 if healthy and not waiting else 503, dumps=_dumps)

    async def metrics_page(self, request: web.Request) -> web.Response:
        """The Prometheus text format. Cheap: the counters are in memory, and the store gauges
        come from two small reads (no write). A wrong or missing bearer token gets 401, and
        spends the address's rate-limit budget like a failed webhook authentication."""
        if self._metrics_token is not None:
            peer = request.remote or "unknown"
            if self.limiter.exhausted(peer):
                return web.Response(status=429, text="slow down")
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._metrics_token):
                self.limiter.allow(peer)
                log.warning("metrics scrape refused: missing or wrong bearer token, from %s", peer)
                return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        await self.metrics.refresh(self.store)
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def training_webhook(self, request: web.Request) -> web.Response:
        peer = request.remote or "unknown"
        count = self.metrics.webhook
        if not self.accepting:
            count("refused", "shutting_down")
            return _text(503, "shutting down")
        if request.content_type != "application/json":
            count("refused", "content_type")
            return _reject(415, f"content type {request.content_type!r}", peer)
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            count("refused", "too_large")
            return _reject(413, f"{request.content_length}-byte body", peer)

        # -- authentication: only failures spend the address's budget ---------------------------
        job_id_text, secret = request.match_info["job_id"], request.match_info["secret"]
        job_id = int(job_id_text) if job_id_text.isdigit() and len(job_id_text) < 19 else None
        shaped = job_id is not None and _SECRET_SHAPE.match(secret) is not None
        known = self._known.get(job_id) if shaped and job_id is not None else None
        job: Job | None = None
        if known is None or not secret_matches(secret, known.secret_hash):
            if self.limiter.exhausted(peer):  # before any database lookup
                count("refused", "rate_limited")
                return _reject(429, "slow down", peer)
            if shaped and known is None and job_id is not None:
                # Read-only; only a job with a training id is remembered (before that, each
                # submission attempt has a new secret, so the stored hash is read every time).
                job = await self.store.get_job(job_id)
            if job is None or not secret_matches(secret, job.webhook_secret_hash):
                self.limiter.allow(peer)
                log.warning("webhook rejected: unknown job or wrong secret (job %s) from %s", job_id_text[:20], peer)
                count("refused", "unauthenticated")
                return web.Response(status=404)  # no detail: don't tell a prober which part was wrong
            known = self._remember(job)
        assert job_id is not None

        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            count("refused", "too_large")
            return _reject(413, f"body over {self.max_body_bytes} bytes", peer, job_id)
        body = parse_body(raw)
        if body is None:
            count("refused", "invalid_json")
            return _reject(400, "invalid JSON", peer, job_id)
        model_id = body.get("model_id") or body.get("training_id") or body.get("id")
        model_id = str(model_id).strip() if model_id is not None else ""
        if not model_id:
            count("refused", "model_id_mismatch")
            return _reject(409, "model_id does not match this job", peer, job_id)
        word = status_word(body)
        if word is None:
            count("refused", "missing_status")
            return _reject(400, "missing training_status", peer, job_id)

        # -- a finished job: answered from memory or the read above, nothing written ------------
        if known is not None:
            if model_id != known.training_id:
                count("refused", "model_id_mismatch")
                return _reject(409, "model_id does not match this job", peer, job_id)
            if known.finished is not None:
                count("ignored")
                return _ignored(known.finished, job_id)
        elif job is not None and job.state.is_terminal:  # no training id, but finished: sticky
            count("ignored")
            return _ignored(job.state.value, job_id)

        detail = body.get("logs") or body.get("message") or body.get("messege")
        event = Event(
            Action.PROVIDER_STATUS,
            EventSource.WEBHOOK,
            status=word,
            detail=str(detail)[:500] if detail else None,
            training_id=model_id,
        )
        # The job's own checks (training id, finished or not) are made again by the state machine
        # inside the write transaction, so they cannot race another webhook for the same job.
        try:
            result = await self.service.record(job_id, event, payload=raw.decode("utf-8", "replace")[:4000])
        except JobNotFound:  # deleted (/forgetme) since it was read or remembered
            self._known.pop(job_id, None)
            count("refused", "job_deleted")
            return web.Response(status=404)
        except TrainingIdTaken:  # adopting a training id that another job already has
            count("refused", "model_id_other_job")
            return _reject(409, "model_id belongs to another job", peer, job_id)
        if not result.plan.write:
            if result.plan.reason == "terminal":  # finished meanwhile (a concurrent webhook)
                self._remember(result.before)
                count("ignored")
                return _ignored(result.before.state.value, job_id)
            count("refused", "model_id_mismatch" if result.plan.reason in _REFUSALS else "other")
            return _reject(409, _REFUSALS.get(result.plan.reason, result.plan.reason), peer, job_id)
        self._remember(result.after)
        count("accepted" if result.changed else "duplicate")
        return web.json_response({"ok": True, "state": result.after.state.value})

    def forget_owner(self, owner_id: int) -> None:
        """Drop what is remembered of a user's jobs (their data was deleted with /forgetme)."""
        for job_id in [job_id for job_id, known in self._known.items() if known.owner_id == owner_id]:
            del self._known[job_id]

    def _remember(self, job: Job) -> KnownJob | None:
        """Remember a job that has a training id (and whether it finished); None if it has none."""
        if not job.training_id or not job.webhook_secret_hash:
            return None
        known = self._known.get(job.id)
        if known is None:
            if len(self._known) >= _KNOWN_JOBS_SIZE:
                self._known.pop(next(iter(self._known)))
            known = self._known[job.id] = KnownJob(job.webhook_secret_hash, job.training_id, job.owner_id)
        if job.state.is_terminal:
            known.finished = job.state.value
        return known
