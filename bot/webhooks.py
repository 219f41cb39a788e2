"""The webhook HTTP server: training webhooks from the provider, and /healthz.

The provider signs nothing, so each job's webhook URL carries an unguessable secret; only its
hash is stored. Cheap checks come first (rate limit, content type, size) and a rejected request
never writes to the database. An accepted webhook is persisted through the state machine and
answered at once; Discord work happens later, from the outbox.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.jobs.service import JobService, secret_matches
from bot.jobs.states import FAILURE_WORDS, Action, Event, EventSource
from bot.store import JobNotFound, Store

log = logging.getLogger(__name__)

_SECRET_CACHE_SIZE = 50_000
#: What the provider is told when the state machine refuses a webhook outright.
_REFUSALS = {"terminal": "job already finished", "model_id mismatch": "model_id does not match this job"}
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_SECRET_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{16,128}$")


@dataclass
class RateLimiter:
    """A token bucket per client address: `rate_per_minute` sustained, bursts up to `burst`."""

    rate_per_minute: int
    burst: int = 0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        capacity = float(self.burst or max(10, self.rate_per_minute // 4))
        now = self.clock()
        tokens, stamp = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - stamp) * self.rate_per_minute / 60.0)
        if len(self._buckets) > 10_000:  # forget idle addresses; bounded memory under a spray
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


def parse_body(raw: bytes) -> dict[str, Any] | None:
    """JSON object from the body; tolerates the trailing comma of the provider's own example."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


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


class WebhookServer:
    """Builds the aiohttp application and runs it on the configured host and port."""

    def __init__(
        self,
        service: JobService,
        store: Store,
        *,
        max_body_bytes: int,
        rate_per_minute: int,
        discord_status: Callable[[], str] = lambda: "not started",
    ) -> None:
        self.service = service
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.limiter = RateLimiter(rate_per_minute)
        self.discord_status = discord_status
        self.accepting = True
        self._secret_hashes: dict[int, str] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/webhooks/training/{job_id}/{secret}", self.training_webhook)
        app.router.add_get("/healthz", self.healthz)
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
        database = await self.store.db.ping()
        discord = self.discord_status()
        body = {"status": "ok" if database else "degraded", "database": database, "discord": discord}
        return web.json_response(body, status=200 if database else 503)

    async def training_webhook(self, request: web.Request) -> web.Response:
        peer = request.remote or "unknown"
        if not self.limiter.allow(peer):
            return _reject(429, "slow down", peer)
        if not self.accepting:
            return _text(503, "shutting down")
        if request.content_type != "application/json":
            return _reject(415, f"content type {request.content_type!r}", peer)
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return _reject(413, f"{request.content_length}-byte body", peer)

        job_id_text, secret = request.match_info["job_id"], request.match_info["secret"]
        job_id = int(job_id_text) if job_id_text.isdigit() and len(job_id_text) < 19 else None
        secret_hash = None
        if job_id is not None and _SECRET_SHAPE.match(secret):
            secret_hash = await self._secret_hash(job_id)
        if job_id is None or not secret_matches(secret, secret_hash):
            log.warning("webhook rejected: unknown job or wrong secret (job %s) from %s", job_id_text[:20], peer)
            return web.Response(status=404)  # no detail: don't tell a prober which part was wrong

        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reject(413, f"body over {self.max_body_bytes} bytes", peer, job_id)
        body = parse_body(raw)
        if body is None:
            return _reject(400, "invalid JSON", peer, job_id)
        model_id = body.get("model_id") or body.get("training_id") or body.get("id")
        model_id = str(model_id).strip() if model_id is not None else ""
        if not model_id:
            return _reject(409, "model_id does not match this job", peer, job_id)
        word = status_word(body)
        if word is None:
            return _reject(400, "missing training_status", peer, job_id)

        detail = body.get("logs") or body.get("message") or body.get("messege")
        event = Event(
            Action.PROVIDER_STATUS,
            EventSource.WEBHOOK,
            status=word,
            detail=str(detail)[:500] if detail else None,
            training_id=model_id,
        )
        # The job's own checks (training id, finished or not) are made by the state machine
        # inside the write transaction, so they cannot race another webhook for the same job.
        try:
            result = await self.service.record(job_id, event, payload=raw.decode("utf-8", "replace")[:4000])
        except JobNotFound:  # deleted (/forgetme) since its secret was cached
            self._secret_hashes.pop(job_id, None)
            return web.Response(status=404)
        except sqlite3.IntegrityError:  # adopting a training id that another job already has
            return _reject(409, "model_id belongs to another job", peer, job_id)
        if not result.plan.write:
            return _reject(409, _REFUSALS.get(result.plan.reason, result.plan.reason), peer, job_id)
        return web.json_response({"ok": True, "state": result.after.state.value})

    async def _secret_hash(self, job_id: int) -> str | None:
        """The job's stored secret hash; cached, since it never changes once the job is submitted."""
        cached = self._secret_hashes.get(job_id)
        if cached is not None:
            return cached
        job = await self.store.get_job(job_id)
        if job is None or job.webhook_secret_hash is None:
            return None
        if len(self._secret_hashes) >= _SECRET_CACHE_SIZE:
            self._secret_hashes.pop(next(iter(self._secret_hashes)))
        self._secret_hashes[job_id] = job.webhook_secret_hash
        return job.webhook_secret_hash
