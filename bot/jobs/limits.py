"""Who may train, and how often: per-user active jobs, per-user and per-guild daily quotas, roles."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Settings
from bot.jobs.ports import JobStore

DAY = timedelta(days=1)


class LimitReached(Exception):
    """The user may not start a training now; `message` says why and when they can."""

    def __init__(self, message: str, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_at = retry_at


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: int
    guild_id: int | None
    role_ids: Collection[int] = ()
    manages_guild: bool = False


def when(moment: datetime) -> str:
    return f"<t:{int(moment.timestamp())}:R>"


async def check_can_train(store: JobStore, settings: Settings, who: Requester) -> None:
    """Raise LimitReached with a clear message when `who` may not start a training now."""
    exempt = settings.limits_exempt_managers and who.manages_guild
    restricted = settings.train_role_ids and who.guild_id is not None and not exempt
    if restricted and not set(settings.train_role_ids) & set(who.role_ids):
        raise LimitReached("Training is limited to certain roles on this server, and you have none of them.")
    if exempt:
        return
    active = await store.count_active_jobs(who.user_id)
    if active >= settings.max_active_jobs_per_user:
        raise LimitReached(
            f"You already have {active} training(s) running (the limit is {settings.max_active_jobs_per_user}). "
            "Wait for it to finish or /cancel it."
        )
    since = store.now() - DAY
    user_limit = settings.max_trainings_per_user_per_day
    if user_limit:
        retry_at = _quota_reopens(await store.submissions_since(since, owner_id=who.user_id), user_limit)
        if retry_at is not None:
            raise LimitReached(
                f"You have used your {user_limit} trainings for today. You can train again {when(retry_at)}.",
                retry_at,
            )
    guild_limit = settings.max_trainings_per_guild_per_day
    if guild_limit and who.guild_id is not None:
        retry_at = _quota_reopens(await store.submissions_since(since, guild_id=who.guild_id), guild_limit)
        if retry_at is not None:
            raise LimitReached(
                f"This server has used its {guild_limit} trainings for today. Trainings open again {when(retry_at)}.",
                retry_at,
            )


def _quota_reopens(submissions: list[datetime], limit: int) -> datetime | None:
    """When a rolling 24-hour quota frees a slot again, or None if a slot is free now."""
    if len(submissions) < limit:
        return None
    return submissions[-limit] + DAY
