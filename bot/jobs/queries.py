"""What members may see of the jobs: their own, found by id or text, a page at a time, with the
timeline and the provider's live word on a running one.

Another member's job is answered exactly like one that does not exist ("not found"), so no one
can learn which ids exist; a manager may name any job of their own guild (to cancel it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from bot.errors import UserError
from bot.jobs.model import Job, JobEvent
from bot.jobs.ports import JobStore, TrainingProvider
from bot.jobs.states import ACTIVE_STATES, JobState
from bot.jobs.training_api import TrainingStatus

NOT_FOUND = "I can't find that job among yours. Use /mymodels to list them."
_JOB_REFERENCE = re.compile(r"#?(\d{1,18})")
#: How far back a server's managers see its failed trainings.
RECENT_FAILURES = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a member's jobs, newest first; `page` is clamped to the pages there are."""

    jobs: list[Job]
    page: int
    pages: int
    total: int


class JobQueries:
    def __init__(self, store: JobStore, provider: TrainingProvider) -> None:
        self.store = store
        self.provider = provider

    async def owned_job(self, user_id: int, job_ref: str | None, *, manager_guild: int | None = None) -> Job:
        """The member's job named by `job_ref` (an id, `#id`), or their latest; with `manager_guild`,
        any job of that guild too. Raises UserError otherwise."""
        if not job_ref:
            latest = await self.store.jobs_for_owner(user_id, limit=1)
            if not latest:
                raise UserError("You have no trainings yet. Start one with /train.")
            return latest[0]
        match = _JOB_REFERENCE.fullmatch(job_ref.strip())
        job = await self.store.get_job(int(match[1])) if match else None
        if job is None or job.state is JobState.PREVIEW:
            raise UserError(NOT_FOUND)
        if job.owner_id == user_id or (manager_guild is not None and job.guild_id == manager_guild):
            return job
        raise UserError(NOT_FOUND)

    async def server_jobs(self, guild_id: int, *, limit: int = 25) -> tuple[list[Job], list[Job]]:
        """A server's running trainings and its failures of the last 7 days, newest first (for its
        managers: /lora-admin jobs)."""
        active = await self.store.guild_jobs(guild_id, sorted(ACTIVE_STATES), limit=limit)
        since = self.store.now() - RECENT_FAILURES
        failed = await self.store.guild_jobs(guild_id, [JobState.FAILED], updated_since=since, limit=10)
        return active, failed

    async def search(self, owner_id: int, text: str, *, limit: int = 25) -> list[Job]:
        """The member's newest jobs whose name or id contains `text` (autocomplete)."""
        return await self.store.search_owner_jobs(owner_id, text.strip().lstrip("#"), limit=limit)

    async def page(self, owner_id: int, page: int, *, size: int) -> JobPage:
        total = await self.store.count_jobs_for_owner(owner_id)
        pages = max(1, -(-total // size))
        page = min(max(page, 0), pages - 1)
        jobs = await self.store.jobs_for_owner(owner_id, limit=size, offset=page * size)
        return JobPage(jobs, page, pages, total)

    async def timeline(self, job: Job) -> list[JobEvent]:
        return await self.store.events_for_job(job.id)

    async def live_status(self, job: Job) -> TrainingStatus | None:
        """What the provider says of a running training now (None when there is nothing to ask).

        Raises `ProviderError` when it can't be asked."""
        if not job.training_id or job.state.is_terminal:
            return None
        return await self.provider.training_status(job.training_id)
