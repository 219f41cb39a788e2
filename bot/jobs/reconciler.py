"""Polls the provider for jobs whose webhooks are late, and fails jobs that stalled.

The provider's webhooks may come once, many times, out of order, or never. Every non-terminal
job not updated for `interval` is polled with `fine_tune_status`, and what the poll says goes
through the same state-change function as a webhook. A job without progress for `stall_deadline`
fails as stalled and its owner is told.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

from bot.jobs.service import JobService
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.provider.errors import ProviderError, TrainingNotFound
from bot.store import Job, Store

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        store: Store,
        service: JobService,
        *,
        interval: float,
        stall_deadline: float,
        preview_timeout: float,
    ) -> None:
        self.store = store
        self.service = service
        self.interval = timedelta(seconds=interval)
        self.stall_deadline = timedelta(seconds=stall_deadline)
        self.preview_timeout = timedelta(seconds=preview_timeout)

    async def run(self) -> None:
        """A pass over every active job at start-up, then the overdue ones periodically."""
        await self.run_once(everything=True)
        period = max(1.0, min(60.0, self.interval.total_seconds() / 2))
        while True:
            await asyncio.sleep(period)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler pass failed; trying again next period")

    async def run_once(self, *, everything: bool = False) -> int:
        """Check overdue jobs (all active jobs when `everything`); returns how many were checked."""
        now = self.store.now()
        # Checked jobs are touched (updated_at = now), so they drop out of the next page.
        cutoff = now if everything else now - self.interval
        seen: set[int] = set()
        while True:
            jobs = [job for job in await self.store.overdue_jobs(cutoff, limit=100) if job.id not in seen]
            if not jobs:
                return len(seen)
            for job in jobs:
                seen.add(job.id)
                await self.check(job)

    async def check(self, job: Job) -> None:
        now = self.store.now()
        if job.state is JobState.PREVIEW:
            if now - job.created_at >= self.preview_timeout:
                await self.service.expire_preview(job.id, "The preview timed out.")
            else:
                await self.store.touch(job.id)
            return
        if now - job.progressed_at >= self.stall_deadline:
            hours = self.stall_deadline.total_seconds() / 3600
            await self.service.record(
                job.id,
                Event(
                    Action.FAIL,
                    EventSource.SYSTEM,
                    detail=f"Stalled: no progress from the provider for {hours:g} hours.",
                ),
            )
            return
        if not job.training_id:  # uncertain, or submitting right now: nothing to ask about
            await self.store.touch(job.id)
            return
        try:
            status = await self.service.provider.training_status(job.training_id)
        except TrainingNotFound as error:
            log.warning("job %s: provider does not know training %s", job.id, job.training_id)
            await self.service.record(job.id, Event(Action.FAIL, EventSource.POLL, detail=error.user_message))
            return
        except ProviderError as error:
            log.warning("job %s: status poll failed (%s); will retry", job.id, type(error).__name__)
            await self.store.touch(job.id)
            return
        await self.service.record(
            job.id,
            Event(
                Action.PROVIDER_STATUS, EventSource.POLL, status=status.status, detail="; ".join(status.log_lines[-3:])
            ),
            payload=json.dumps(dict(status.raw), default=str)[:4000],
        )
        await self.store.touch(job.id, eta_text=status.eta)
