"""Who may train or make pictures, and how often: roles, per-member running jobs, per-member and
per-server daily quotas, each read from the settings in effect in the server (`ServerPolicy`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.jobs.ports import JobStore
from bot.jobs.server_settings import ServerPolicy

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


def trainings(count: int) -> str:
    return f"{count} training" if count == 1 else f"{count} trainings"


def when(moment: datetime) -> str:
    return f"<t:{int(moment.timestamp())}:R>"


def check_roles(policy: ServerPolicy, who: Requester, *, use: Literal["train", "generate"]) -> None:
    """Raise LimitReached when the server limits `use` to roles `who` has none of. Role lists apply
    in the server only: a DM carries no roles (and the defaults apply there)."""
    allowed = policy.train_role_ids if use == "train" else policy.generate_role_ids
    if not allowed or who.guild_id is None or exempt(policy, who):
        return
    if not set(allowed) & set(who.role_ids):
        what = "Training" if use == "train" else "Making pictures"
        roles = ", ".join(f"<@&{role}>" for role in allowed)
        raise LimitReached(f"{what} is limited to certain roles on this server ({roles}), and you have none of them.")


def exempt(policy: ServerPolicy, who: Requester) -> bool:
    """Managers skip the role lists and the limits where the server (or the default) says so."""
    return policy.limits_exempt_managers and who.manages_guild and who.guild_id is not None


async def check_can_train(store: JobStore, policy: ServerPolicy, who: Requester) -> None:
    """Raise LimitReached with a clear message when `who` may not start a training now, under the
    settings in effect where they asked (`policy`). A limit of 0 means no limit."""
    check_roles(policy, who, use="train")
    if exempt(policy, who):
        return
    active_limit = policy.max_active_jobs_per_user
    if active_limit:
        active = await store.count_active_jobs(who.user_id)
        if active >= active_limit:
            raise LimitReached(
                f"You already have {active} training(s) running (the limit is {active_limit}). "
                "Wait for it to finish or /cancel it."
            )
    since = store.now() - DAY
    user_limit = policy.max_trainings_per_user_per_day
    if user_limit:
        retry_at = _quota_reopens(await store.submissions_since(since, owner_id=who.user_id), user_limit)
        if retry_at is not None:
            raise LimitReached(
                f"You have used your {trainings(user_limit)} for today; try again {when(retry_at)}.", retry_at
            )
    guild_limit = policy.max_trainings_per_guild_per_day
    if guild_limit and who.guild_id is not None:
        retry_at = _quota_reopens(await store.submissions_since(since, guild_id=who.guild_id), guild_limit)
        if retry_at is not None:
            raise LimitReached(
                f"This server has used its {trainings(guild_limit)} for today; try again {when(retry_at)}.",
                retry_at,
            )


def _quota_reopens(submissions: list[datetime], limit: int) -> datetime | None:
    """When a rolling 24-hour quota frees a slot again, or None if a slot is free now."""
    if len(submissions) < limit:
        return None
    return submissions[-limit] + DAY
