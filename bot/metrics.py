"""Prometheus metrics: what the bot counts, and the gauges read from the store at scrape time.

Each `Application` makes one `Metrics`, with a registry of its own (never the library's global
one, so several applications in one process, as in the tests, don't clash), and hands it to
the components that count; the domain's services see it as the `Metrics` protocol of
`bot/jobs/ports.py`. A component made without one counts nothing (the domain's `NoMetrics`)
or into a private `Metrics` that nobody reads, so it works the same with or without metrics.

Labels take values from small fixed sets only (states, sources, endpoint names, reasons): never
an id, a secret or free text.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

if TYPE_CHECKING:
    from bot.jobs.ports import JobStore

log = logging.getLogger(__name__)

#: The Prometheus text format (0.0.4), which every Prometheus server reads.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Provider call latency buckets, in seconds: status polls take tenths, submissions tens.
_LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The metric objects of one running bot, in their own registry."""

    def __init__(self, *, process: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        if process:  # CPU, memory, open files of this process (read from /proc where there is one)
            ProcessCollector(registry=registry)

        # Read from the store at each scrape (`refresh`).
        self.jobs = Gauge("lorabot_jobs", "Jobs by state.", ["state"], registry=registry)
        self.generations = Gauge(
            "lorabot_generations", "Generations (/imagine) by state.", ["state"], registry=registry
        )
        self.outbox_pending = Gauge(
            "lorabot_outbox_pending", "Discord notifications written but not delivered yet.", registry=registry
        )
        self.outbox_oldest_age = Gauge(
            "lorabot_outbox_oldest_age_seconds",
            "Age of the oldest undelivered Discord notification (0 when there is none).",
            registry=registry,
        )

        # Counted as things happen.
        self.state_changes = Counter(
            "lorabot_job_state_changes",
            "Job state changes, by the source of the event that caused them and the new state.",
            ["source", "state"],
            registry=registry,
        )
        self.webhooks = Counter(
            "lorabot_webhooks",
            "Training webhooks by outcome: accepted (moved the job), duplicate (recorded, nothing moved), "
            "ignored (the job had finished), refused (with the reason).",
            ["outcome", "reason"],
            registry=registry,
        )
        self.provider_requests = Counter(
            "lorabot_provider_requests",
            "HTTP requests to the provider by endpoint and outcome (ok, redirect, rate_limited, client_error, "
            "server_error, timeout, network_error).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.provider_latency = Histogram(
            "lorabot_provider_request_duration_seconds",
            "Time to the provider's answer (or the failure), by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.discord_failures = Counter(
            "lorabot_discord_delivery_failures",
            "Failed deliveries of outbox items to Discord, by item kind and reason.",
            ["kind", "reason"],
            registry=registry,
        )
        self.reconciler_passes = Counter(
            "lorabot_reconciler_passes", "Completed passes of the reconciler.", registry=registry
        )
        self.reconciler_jobs_checked = Counter(
            "lorabot_reconciler_jobs_checked", "Jobs the reconciler looked at.", registry=registry
        )
        self.scrape_errors = Counter(
            "lorabot_metrics_store_errors",
            "Scrapes whose read of the store failed (the store gauges then keep their last values).",
            registry=registry,
        )

    # -- counting -----------------------------------------------------------------------------

    def state_changed(self, source: str, state: str) -> None:
        self.state_changes.labels(source, state).inc()

    def webhook(self, outcome: str, reason: str = "") -> None:
        self.webhooks.labels(outcome, reason).inc()

    def provider_request(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.provider_requests.labels(endpoint, outcome).inc()
        self.provider_latency.labels(endpoint).observe(seconds)

    def discord_failure(self, kind: str, reason: str) -> None:
        self.discord_failures.labels(kind, reason).inc()

    def reconciler_pass(self, checked: int) -> None:
        self.reconciler_passes.inc()
        self.reconciler_jobs_checked.inc(checked)

    # -- scraping -----------------------------------------------------------------------------

    async def refresh(self, store: JobStore) -> bool:
        """Set the store gauges: two small reads, no write. False (gauges unchanged) if the store failed."""
        # Imported here: the provider client imports this module, and must not import the store.
        from bot.jobs.generation_model import GenerationState
        from bot.jobs.states import JobState

        try:
            counts = await store.state_counts()
            pending, oldest_age = await store.outbox_backlog()
        except Exception as error:  # the database is down or closing: the scrape goes on without these gauges
            log.warning("metrics: could not read the store's counts (%s)", type(error).__name__)
            self.scrape_errors.inc()
            return False
        for gauge, states, entity in (
            (self.jobs, [state.value for state in JobState], "jobs"),
            (self.generations, [state.value for state in GenerationState], "generations"),
        ):
            found = counts.get(entity, {})
            for state in dict.fromkeys([*states, *found]):  # every known state, even at 0
                gauge.labels(state).set(found.get(state, 0))
        self.outbox_pending.set(pending)
        self.outbox_oldest_age.set(oldest_age)
        return True

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
