"""Who may train, and how often: per-user active jobs, per-user and per-guild daily quotas, roles."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Settings
from bot.store import Store

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


def _when(moment: datetime) -> str:
    return f"<t:{int(moment.timestamp())}:R>"


async def check_can_train(store: Store, settings: Settings, who: Requester) -> None:
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
    now = store.now()
    if settings.max_trainings_per_user_per_day:
        times = await store.submissions_since(now - DAY, owner_id=who.user_id)
        if len(times) >= settings.max_trainings_per_user_per_day:
            retry_at = times[-settings.max_trainings_per_user_per_day] + DAY
            raise LimitReached(
                f"You have used your {settings.max_trainings_per_user_per_day} trainings for today. "
                f"You can train again {_when(retry_at)}.",
                retry_at,
            )
    if settings.max_trainings_per_guild_per_day and who.guild_id is not None:
        times = await store.submissions_since(now - DAY, guild_id=who.guild_id)
        if len(times) >= settings.max_trainings_per_guild_per_day:
            retry_at = times[-settings.max_trainings_per_guild_per_day] + DAY
            raise LimitReached(
                f"This server has used its {settings.max_trainings_per_guild_per_day} trainings for today. "
                f"Trainings open again {_when(retry_at)}.",
                retry_at,
            )
