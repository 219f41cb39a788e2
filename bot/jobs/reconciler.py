"""Polls the provider for jobs whose webhooks are late, settles unconfirmed submissions, and fails
jobs that stalled.

The provider's webhooks may come once, many times, out of order, or never. Every non-terminal
job not updated for `interval` is polled with `fine_tune_status`, and what the poll says goes
through the same state-change function as a webhook. A job without progress for `stall_deadline`
fails as stalled and its owner is told.

A failed *call* never fails a job: network errors, 5xx, rate limits, and even "not found" (which
a proxy or a lagging provider can answer for a training that exists) only mean "ask again next
time"; only the stall deadline ends such a job. A failed *training* (the provider says so in the
status answer) fails the job at once with the provider's reason.

An `uncertain` job (the provider never confirmed its submission) has no training id to poll. It
is matched against the account's model list: a model that appeared after the job's submission
and belongs to no other job is adopted, but only when the match is unambiguous.

With webhooks, this is the safety net for the ones that never come (RECONCILE_INTERVAL_SECONDS).
In polling mode (no PUBLIC_URL, `spread`), it is how jobs move at all: each active job is polled
once per POLL_INTERVAL_SECONDS, and the status calls are paced `interval / active jobs` apart,
so the jobs' polls spread over the interval instead of all coming at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot.jobs.model import Job, JobNotFound
from bot.jobs.ports import JobStore, Metrics, NoMetrics
from bot.jobs.provider_errors import ProviderError, TrainingNotFound
from bot.jobs.service import JobService
from bot.jobs.states import Action, Event, EventSource, JobState

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        store: JobStore,
        service: JobService,
        *,
        interval: float,
        stall_deadline: float,
        preview_timeout: float,
        spread: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.service = service
        #: Completed passes and the jobs they checked.
        self.metrics: Metrics = metrics if metrics is not None else NoMetrics()
        self.interval = timedelta(seconds=interval)
        self.stall_deadline = timedelta(seconds=stall_deadline)
        self.preview_timeout = timedelta(seconds=preview_timeout)
        #: Polling mode: status calls are paced so that the jobs' polls spread over the interval.
        self.spread = spread
        #: Seconds between two passes over the overdue jobs. In polling mode passes come often, so
        #: a job is polled soon after its interval is up (never sooner: see `run_once`).
        self.period = max(1.0, min(5.0, interval / 5)) if spread else max(1.0, min(60.0, interval / 2))
        self._sleep = sleep
        #: Polling mode: the earliest time of the next status call, and the gap between two calls.
        self._next_poll_at: datetime | None = None
        self._gap = timedelta(0)
        #: The last failed call per job, for the stall message (in memory: a hint, not a record).
        self._last_call_error: dict[int, str] = {}

    async def run(self) -> None:
        """A pass over every active job, then the overdue ones periodically.

        Run under the supervisor: an exception that escapes a pass ends this coroutine, is logged
        with its traceback, and the supervisor starts it again (with a full pass) after a backoff.
        """
        await self.run_once(everything=True)
        while True:
            await self._sleep(self.period)
            await self.run_once()

    async def run_once(self, *, everything: bool = False) -> int:
        """Check overdue jobs (all active jobs when `everything`); returns how many were checked."""
        now = self.store.now()
        # Checked jobs are touched (updated_at = now), so they drop out of the next page.
        cutoff = now if everything else now - self.interval
        if self.spread:
            self._gap = self.interval / max(1, await self.store.count_pollable_jobs())
        seen: set[int] = set()
        uncertain: list[Job] = []
        while True:
            jobs = [job for job in await self.store.overdue_jobs(cutoff, limit=100) if job.id not in seen]
            if not jobs:
                break
            for job in jobs:
                seen.add(job.id)
                if job.state is JobState.UNCERTAIN and not job.training_id and not self._stalled(job):
                    uncertain.append(job)
                    continue
                await self._check_one(job)
        if uncertain:
            await self.settle_uncertain(uncertain)
        self.metrics.reconciler_pass(len(seen))
        return len(seen)

    async def _check_one(self, job: Job) -> None:
        """Check one job; a job that vanished meanwhile (/forgetme) or a bug in one job's check
        must not end the pass for the others."""
        try:
            await self.check(job)
        except JobNotFound:
            log.info("job %s: deleted while being checked", job.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: check failed; trying again next pass", job.id)

    def _interrupted(self, job: Job, now: datetime) -> bool:
        """A submission older than any live one can be: the process making it is gone."""
        started = job.submitted_at
        return (
            job.state is JobState.SUBMITTING
            and started is not None
            and now - started >= self.service.submission_grace()
        )

    def _stalled(self, job: Job) -> bool:
        return self.store.now() - job.progressed_at >= self.stall_deadline

    async def check(self, job: Job) -> None:
        now = self.store.now()
        if job.state is JobState.PREVIEW:
            if now - job.created_at >= self.preview_timeout:
                await self.service.expire_preview(job.id, "The preview timed out.")
            else:
                await self.store.touch(job.id)
            return
        if self._interrupted(job, now):  # its process died mid-submission (several processes share the jobs)
            await self.service.settle_interrupted(job)
            return
        if self._stalled(job):
            await self.service.record(job.id, Event(Action.FAIL, EventSource.SYSTEM, detail=self._stall_reason(job)))
            self._last_call_error.pop(job.id, None)
            return
        if not job.training_id:  # submitting right now, or uncertain (settled from the list)
            await self.store.touch(job.id)
            return
        if self.spread:
            await self._pace()
        try:
            status = await self.service.provider.training_status(job.training_id)
        except ProviderError as error:
            what = "does not know the training (yet)" if isinstance(error, TrainingNotFound) else type(error).__name__
            log.warning("job %s: status poll failed: provider %s; will ask again", job.id, what)
            self._last_call_error[job.id] = (
                "the provider kept answering that it does not know this training"
                if isinstance(error, TrainingNotFound)
                else "the provider could not be asked"
            )
            await self.store.touch(job.id)
            return
        self._last_call_error.pop(job.id, None)
        detail = status.failure_reason if status.failed else "; ".join(status.log_lines[-3:])
        if status.failed:
            log.warning("job %s: the provider reports that training %s failed", job.id, job.training_id)
        await self.service.record(
            job.id,
            Event(Action.PROVIDER_STATUS, EventSource.POLL, status=status.status, detail=detail or None),
            payload=json.dumps(dict(status.raw), default=str)[:4000],
        )
        await self.store.touch(job.id, eta_text=status.eta)

    async def _pace(self) -> None:
        """Polling mode: wait until the previous status call is `interval / active jobs` behind.

        Each job is polled at most once per interval (a job is due only when not updated for
        that long, and polling it touches it), and these gaps spread the jobs' polls over it.
        """
        now = self.store.now()
        if self._next_poll_at is not None and self._next_poll_at > now:
            await self._sleep((self._next_poll_at - now).total_seconds())
        self._next_poll_at = self.store.now() + self._gap

    def _stall_reason(self, job: Job) -> str:
        hours = f"{self.stall_deadline.total_seconds() / 3600:g}"
        if job.state is JobState.UNCERTAIN and not job.training_id:
            # Discord's <t:...> markup shows the time in each reader's own time zone.
            sent = f"at <t:{int(job.submitted_at.timestamp())}:f>" if job.submitted_at else "when you pressed Start"
            return (
                f"The outcome is unknown: the provider never confirmed the training sent {sent}, and no "
                f"matching model appeared on the bot's provider account within {hours} hours. It was not "
                "sent again, so you were not charged twice. If it did start, the bot owner can find it on "
                "the provider's dashboard among the trainings created at that time."
            )
        reason = f"Stalled: no progress from the provider for {hours} hours."
        last = self._last_call_error.get(job.id)
        return f"{reason} (Last poll: {last}.)" if last else reason

    async def settle_uncertain(self, jobs: list[Job]) -> int:
        """Adopt, for unconfirmed submissions, the models that can only be theirs.

        One listing of the account's models serves every such job. A model is a candidate for a
        job when it was first seen after the listing taken just before that job's submission and
        belongs to no job. It is adopted only when it is the job's one candidate and no other
        unconfirmed job could claim it; otherwise the job waits (a webhook may still adopt it) and
        the stall deadline ends it. Returns how many jobs adopted a training.
        """
        try:
            listed = await self.service.provider.list_trainings()
        except ProviderError as error:
            log.warning("could not list the provider's models to settle %d job(s) (%s)", len(jobs), error)
            for job in jobs:
                await self.store.touch(job.id)
            return 0
        await self.store.record_listing(listed)
        present = set(listed)
        candidates: dict[int, set[str]] = {}
        for job in jobs:
            if job.baseline_listing is None:
                continue  # no listing before its submission: nothing can tell its model apart
            candidates[job.id] = await self.store.unclaimed_models_since(job.baseline_listing) & present
        adopted = 0
        for job in jobs:
            mine = candidates.get(job.id, set())
            others = set().union(*(ids for job_id, ids in candidates.items() if job_id != job.id))
            if len(mine) == 1 and not mine & others:
                (training_id,) = mine
                log.info("job %s: adopting training %s, which appeared after its submission", job.id, training_id)
                event = Event(Action.ACCEPTED, EventSource.POLL, training_id=training_id)
                try:
                    result = await self.service.record(job.id, event)
                except JobNotFound:
                    continue
                if result.changed:
                    adopted += 1
                    await self._check_one(result.after)  # learn where it is now
                    continue
            elif mine:
                log.info("job %s: %d candidate trainings, not adopting any", job.id, len(mine))
            await self.store.touch(job.id)
        return adopted
