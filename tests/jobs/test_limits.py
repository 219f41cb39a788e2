"""Who may train and how often: active jobs, per-user and per-guild daily quotas, roles, manager exemption."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.config import Settings
from bot.jobs.limits import LimitReached, Requester, check_can_train
from bot.jobs.server_settings import ServerPolicy, defaults_of, resolve
from bot.jobs.states import Action, Event, EventSource
from bot.jobs.transitions import plan_transition
from bot.store.sqlite import SqliteStore

MEMBER = Requester(user_id=1, guild_id=10, role_ids=(100,))


def policy_of(settings: Settings) -> ServerPolicy:
    """The settings in effect in a server that kept every default."""
    return resolve(10, defaults_of(settings), {})


async def submit_job(store: SqliteStore, owner: int = 1, guild: int | None = 10, *, finish: bool = True) -> int:
    job = await store.create_job(owner_id=owner, guild_id=guild, channel_id=5, name="n", params={}, image_count=5)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    if finish:  # done jobs still count against the daily quota, not against the active limit
        await store.apply_event(job.id, Event(Action.FAIL, EventSource.SYSTEM), plan_transition)
    return job.id


async def refused(store: SqliteStore, settings, who: Requester = MEMBER) -> LimitReached:
    with pytest.raises(LimitReached) as caught:
        await check_can_train(store, policy_of(settings), who)
    return caught.value


async def test_a_fresh_member_may_train(store: SqliteStore, settings) -> None:
    await check_can_train(store, policy_of(settings), MEMBER)


async def test_the_active_job_limit(store: SqliteStore, make_settings) -> None:
    settings = make_settings(max_active_jobs_per_user=2, max_trainings_per_user_per_day=0)
    await store.create_job(owner_id=1, guild_id=10, channel_id=5, name="preview", params={}, image_count=5)
    await submit_job(store, finish=False)
    await check_can_train(store, policy_of(settings), MEMBER)  # one running (previews do not count)
    await submit_job(store, finish=False)
    error = await refused(store, settings)
    assert "2 training(s) running" in error.message and "the limit is 2" in error.message
    assert error.retry_at is None
    await check_can_train(store, policy_of(settings), Requester(user_id=2, guild_id=10))  # someone else is fine


async def test_the_per_user_daily_quota_says_when_to_retry(store: SqliteStore, make_settings, clock) -> None:
    settings = make_settings(max_trainings_per_user_per_day=2, max_trainings_per_guild_per_day=0)
    first = clock()
    await submit_job(store)
    clock.advance(hours=3)
    await submit_job(store)
    clock.advance(hours=1)

    error = await refused(store, settings)
    assert error.retry_at == first + timedelta(days=1)
    assert f"<t:{int(error.retry_at.timestamp())}:R>" in error.message
    assert "your 2 trainings for today" in str(error)

    clock.current = first + timedelta(days=1, seconds=1)  # the oldest one left the rolling window
    await check_can_train(store, policy_of(settings), MEMBER)


async def test_the_per_guild_daily_quota(store: SqliteStore, make_settings, clock) -> None:
    settings = make_settings(max_trainings_per_user_per_day=0, max_trainings_per_guild_per_day=3)
    times = []
    for owner in (2, 3, 4):
        times.append(clock())
        await submit_job(store, owner=owner)
        clock.advance(minutes=10)
    await submit_job(store, owner=5, guild=99)  # another guild

    error = await refused(store, settings)
    assert "This server has used its 3 trainings" in error.message
    assert error.retry_at == times[0] + timedelta(days=1)
    assert f"<t:{int(error.retry_at.timestamp())}:R>" in error.message
    await check_can_train(store, policy_of(settings), Requester(user_id=1, guild_id=99))
    await check_can_train(store, policy_of(settings), Requester(user_id=1, guild_id=None))  # in a DM: no guild quota


async def test_zero_means_unlimited(store: SqliteStore, make_settings) -> None:
    settings = make_settings(max_trainings_per_user_per_day=0, max_trainings_per_guild_per_day=0)
    for _ in range(30):
        await submit_job(store)
    await check_can_train(store, policy_of(settings), MEMBER)


async def test_managers_are_exempt_only_when_the_setting_is_on(store: SqliteStore, make_settings) -> None:
    manager = Requester(user_id=1, guild_id=10, role_ids=(), manages_guild=True)
    await submit_job(store, finish=False)
    for _ in range(5):
        await submit_job(store)

    strict = make_settings(train_role_ids=[100])
    await refused(store, strict, manager)
    lenient = make_settings(train_role_ids=[100], limits_exempt_managers=True)
    await check_can_train(store, lenient, manager)  # no role, over every limit: still allowed
    ordinary = Requester(user_id=1, guild_id=10, role_ids=(100,), manages_guild=False)
    await refused(store, lenient, ordinary)


async def test_role_restriction(store: SqliteStore, make_settings) -> None:
    settings = make_settings(train_role_ids=[100, 200])
    await check_can_train(store, policy_of(settings), Requester(user_id=1, guild_id=10, role_ids=(5, 200)))
    error = await refused(store, settings, Requester(user_id=1, guild_id=10, role_ids=(5, 6)))
    assert "limited to certain roles" in error.message
    await check_can_train(store, policy_of(settings), Requester(user_id=1, guild_id=None))  # DMs have no roles to check
