"""Each server's own settings: the settings in effect, changes from what to what, the cache, and
forgetting a server's settings (on request, and 30 days after the bot left it).

The store here is a small in-memory one that keeps the protocol's promises; both real stores are
held to the same promises by `tests/store/contract/test_guild_settings.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.errors import UserError
from bot.jobs.limits import LimitReached, Requester, check_roles
from bot.jobs.model import GuildSettingChange
from bot.jobs.server_settings import RETENTION, SPECS, ServerSettings

GUILD, OTHER = 1000, 2000
MANAGER = 7


class MemoryGuildSettings:
    """The GuildSettingsStore protocol over dicts, counting reads."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.left: dict[int, datetime | None] = {}
        self.changes: list[GuildSettingChange] = []
        self.reads = 0
        self.clock = datetime(2026, 12, 2, tzinfo=UTC)

    def now(self) -> datetime:
        return self.clock

    async def guild_overrides(self, guild_id: int) -> dict[str, Any]:
        self.reads += 1
        return dict(self.rows.get(guild_id, {}))

    async def update_guild_overrides(
        self, guild_id: int, changes: Mapping[str, Any], *, changed_by: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        before = dict(self.rows.get(guild_id, {}))
        after = dict(before)
        for key, value in changes.items():
            if value is None:
                after.pop(key, None)
            else:
                after[key] = value
            if before.get(key) != after.get(key):
                self.changes.append(
                    GuildSettingChange(guild_id, key, before.get(key), after.get(key), changed_by, self.clock)
                )
        self.rows[guild_id] = after
        self.left[guild_id] = None
        return before, after

    async def guild_setting_changes(self, guild_id: int, *, limit: int = 10) -> list[GuildSettingChange]:
        return [c for c in reversed(self.changes) if c.guild_id == guild_id][:limit]

    async def forget_guild(self, guild_id: int) -> bool:
        self.changes = [c for c in self.changes if c.guild_id != guild_id]
        self.left.pop(guild_id, None)
        return self.rows.pop(guild_id, None) is not None

    async def guilds_with_settings(self) -> list[int]:
        return [g for g in self.rows if self.left.get(g) is None]

    async def mark_guilds_left(self, guild_ids: Sequence[int], at: datetime) -> int:
        marked = [g for g in guild_ids if g in self.rows and self.left.get(g) is None]
        for guild_id in marked:
            self.left[guild_id] = at
        return len(marked)

    async def mark_guilds_present(self, guild_ids: Sequence[int]) -> int:
        cleared = [g for g in guild_ids if self.left.get(g) is not None]
        for guild_id in cleared:
            self.left[guild_id] = None
        return len(cleared)

    async def purge_guilds_left_before(self, cutoff: datetime) -> list[int]:
        gone = [g for g, at in self.left.items() if at is not None and at < cutoff]
        for guild_id in gone:
            await self.forget_guild(guild_id)
        return gone


@pytest.fixture
def memory() -> MemoryGuildSettings:
    return MemoryGuildSettings()


@pytest.fixture
def server_settings(memory: MemoryGuildSettings, make_settings: Any) -> ServerSettings:
    defaults = make_settings(max_trainings_per_user_per_day=3, train_role_ids=[55], imagine_cooldown_seconds=30)
    return ServerSettings(memory, defaults)


async def test_a_server_without_settings_follows_every_default(server_settings: ServerSettings) -> None:
    policy = await server_settings.effective(GUILD)
    assert policy.max_trainings_per_user_per_day == 3
    assert policy.train_role_ids == (55,)
    assert policy.card_channel_id is None
    assert all(policy.source(spec.key) == "default" for spec in SPECS)


async def test_a_change_applies_to_that_server_only_and_says_from_what_to_what(
    server_settings: ServerSettings, memory: MemoryGuildSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bot.jobs.server_settings"):
        updates = await server_settings.change(
            GUILD, MANAGER, {"max_trainings_per_user_per_day": 1, "card_channel_id": 42}
        )
    by_key = {u.spec.key: u for u in updates}
    limit = by_key["max_trainings_per_user_per_day"]
    assert (limit.before, limit.before_source, limit.after, limit.after_source) == (3, "default", 1, "server")
    channel = by_key["card_channel_id"]
    assert (channel.before, channel.after, channel.after_source) == (None, 42, "server")

    mine, theirs = await server_settings.effective(GUILD), await server_settings.effective(OTHER)
    assert mine.max_trainings_per_user_per_day == 1 and mine.source("max_trainings_per_user_per_day") == "server"
    assert theirs.max_trainings_per_user_per_day == 3 and theirs.card_channel_id is None
    # Logged with who changed it, and stored with who changed it.
    assert any(
        f"member {MANAGER} changed max_trainings_per_user_per_day from 3" in r.getMessage() for r in caplog.records
    )
    assert {(c.key, c.changed_by) for c in await server_settings.history(GUILD)} == {
        ("max_trainings_per_user_per_day", MANAGER),
        ("card_channel_id", MANAGER),
    }


async def test_setting_the_same_value_again_is_reported_unchanged(server_settings: ServerSettings) -> None:
    await server_settings.change(GUILD, MANAGER, {"max_pictures_per_user_per_day": 5})
    [again] = await server_settings.change(GUILD, MANAGER, {"max_pictures_per_user_per_day": 5})
    assert not again.changed and again.after == 5


async def test_reset_goes_back_to_the_default_and_its_source(server_settings: ServerSettings) -> None:
    await server_settings.change(GUILD, MANAGER, {"train_role_ids": [1, 2, 2]})
    assert (await server_settings.effective(GUILD)).train_role_ids == (1, 2)  # once each
    [update] = await server_settings.change(GUILD, MANAGER, {"train_role_ids": None})
    assert (update.before, update.before_source, update.after, update.after_source) == (
        (1, 2),
        "server",
        (55,),
        "default",
    )


async def test_an_empty_role_list_set_on_the_server_means_everyone(server_settings: ServerSettings) -> None:
    await server_settings.change(GUILD, MANAGER, {"train_role_ids": []})
    policy = await server_settings.effective(GUILD)
    assert policy.train_role_ids == () and policy.source("train_role_ids") == "server"
    check_roles(policy, Requester(1, GUILD), use="train")  # no roles, allowed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_trainings_per_user_per_day": 1001}, r"between 0 \(no limit\) and 1000"),
        ({"max_active_jobs_per_user": -1}, "between 0"),
        ({"imagine_cooldown_seconds": True}, "can't be set"),
        ({"train_role_ids": ["admins"]}, "can't be set"),
        ({"limits_exempt_managers": "yes"}, "can't be set"),
        ({"prefix": "!"}, "no setting called"),
        ({}, "Nothing to change"),
    ],
)
async def test_bad_values_are_refused_and_nothing_is_stored(
    server_settings: ServerSettings, memory: MemoryGuildSettings, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        await server_settings.change(GUILD, MANAGER, changes)
    assert memory.rows == {} and memory.changes == []


async def test_settings_are_read_once_then_served_from_the_cache(
    server_settings: ServerSettings, memory: MemoryGuildSettings
) -> None:
    for _ in range(5):
        await server_settings.effective(GUILD)
    assert memory.reads == 1
    await server_settings.change(GUILD, MANAGER, {"imagine_cooldown_seconds": 0})
    assert (await server_settings.effective(GUILD)).imagine_cooldown_seconds == 0
    assert memory.reads == 1  # the change replaced the cached entry: no read


async def test_with_several_processes_the_cache_is_refreshed_after_its_time(
    memory: MemoryGuildSettings, make_settings: Any
) -> None:
    now = [0.0]
    cached = ServerSettings(memory, make_settings(), cache_seconds=60, clock=lambda: now[0])
    other_process = ServerSettings(memory, make_settings())
    assert (await cached.effective(GUILD)).max_pictures_per_user_per_day == 40
    await other_process.change(GUILD, MANAGER, {"max_pictures_per_user_per_day": 2})
    now[0] = 59
    assert (await cached.effective(GUILD)).max_pictures_per_user_per_day == 40
    now[0] = 61
    assert (await cached.effective(GUILD)).max_pictures_per_user_per_day == 2


async def test_an_unreadable_stored_value_falls_back_to_the_default(
    server_settings: ServerSettings, memory: MemoryGuildSettings, caplog: pytest.LogCaptureFixture
) -> None:
    memory.rows[GUILD] = {"max_trainings_per_user_per_day": "lots", "from_a_newer_release": 1, "card_channel_id": 9}
    policy = await server_settings.effective(GUILD)
    assert policy.max_trainings_per_user_per_day == 3 and policy.source("max_trainings_per_user_per_day") == "default"
    assert policy.card_channel_id == 9
    assert "unreadable stored value of max_trainings_per_user_per_day" in caplog.text


async def test_forget_server_deletes_settings_and_history(
    server_settings: ServerSettings, memory: MemoryGuildSettings
) -> None:
    await server_settings.change(GUILD, MANAGER, {"max_active_jobs_per_user": 0})
    await server_settings.change(OTHER, MANAGER, {"max_active_jobs_per_user": 4})
    assert await server_settings.forget(GUILD, MANAGER)
    assert (await server_settings.effective(GUILD)).max_active_jobs_per_user == 1
    assert await server_settings.history(GUILD) == []
    assert (await server_settings.effective(OTHER)).max_active_jobs_per_user == 4
    assert not await server_settings.forget(GUILD, MANAGER)


async def test_a_left_server_keeps_its_settings_for_30_days_then_they_are_deleted(
    server_settings: ServerSettings, memory: MemoryGuildSettings
) -> None:
    await server_settings.change(GUILD, MANAGER, {"max_active_jobs_per_user": 3})
    await server_settings.change(OTHER, MANAGER, {"max_active_jobs_per_user": 4})
    await server_settings.left(GUILD)
    memory.clock += RETENTION - timedelta(minutes=1)
    assert await server_settings.purge_departed() == []
    assert (await server_settings.effective(GUILD)).max_active_jobs_per_user == 3
    memory.clock += timedelta(minutes=2)
    assert await server_settings.purge_departed() == [GUILD]
    assert (await server_settings.effective(GUILD)).max_active_jobs_per_user == 1  # gone, from the cache too
    assert (await server_settings.effective(OTHER)).max_active_jobs_per_user == 4


async def test_invited_back_in_time_the_server_keeps_its_settings(
    server_settings: ServerSettings, memory: MemoryGuildSettings
) -> None:
    await server_settings.change(GUILD, MANAGER, {"max_active_jobs_per_user": 3})
    await server_settings.left(GUILD)
    memory.clock += timedelta(days=10)
    await server_settings.returned(GUILD)
    memory.clock += RETENTION
    assert await server_settings.purge_departed() == []
    assert (await server_settings.effective(GUILD)).max_active_jobs_per_user == 3


async def test_servers_that_removed_the_bot_while_it_was_offline_start_their_countdown(
    server_settings: ServerSettings, memory: MemoryGuildSettings
) -> None:
    for guild_id in (GUILD, OTHER, 3000):
        await server_settings.change(guild_id, MANAGER, {"max_active_jobs_per_user": 2})
    # The bot is in OTHER only; 3000 is on a shard another process runs, so it is not ours to judge.
    await server_settings.reconcile_presence([OTHER], ours=lambda guild_id: guild_id != 3000)
    assert memory.left == {GUILD: memory.clock, OTHER: None, 3000: None}


async def test_generating_can_be_limited_to_roles_and_managers_can_be_exempt(server_settings: ServerSettings) -> None:
    await server_settings.change(GUILD, MANAGER, {"generate_role_ids": [77]})
    policy = await server_settings.effective(GUILD)
    with pytest.raises(LimitReached, match=r"Making pictures is limited to certain roles.*<@&77>"):
        check_roles(policy, Requester(1, GUILD, role_ids=[55]), use="generate")
    check_roles(policy, Requester(1, GUILD, role_ids=[77]), use="generate")
    check_roles(policy, Requester(1, None), use="generate")  # a DM carries no roles
    boss = Requester(MANAGER, GUILD, manages_guild=True)
    with pytest.raises(LimitReached):
        check_roles(policy, boss, use="generate")
    await server_settings.change(GUILD, MANAGER, {"limits_exempt_managers": True})
    check_roles(await server_settings.effective(GUILD), boss, use="generate")
