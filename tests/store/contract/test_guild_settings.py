"""GuildSettingsStore contract: each server's overrides (only what it changed), the log of real
changes, None back to the default, servers the bot left (kept, then purged), forgetting a server,
and updates of one server that never lose each other's keys. Every test runs on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from bot.jobs.model import GuildSettingChange
from tests.store.contract.conftest import Harness

GUILD, OTHER = 1_152_921_504_606_846_977, 645027906669510667  # Discord ids: more than 2**53
ADMIN = 2**62 + 1
CHANNEL, ROLE_A, ROLE_B = 2**60 + 3, 2**59 + 5, 2**58 + 7


async def change_rows(harness: Harness, guild_id: int) -> int:
    return int(await harness.scalar("SELECT COUNT(*) FROM guild_setting_changes WHERE guild_id = ?", guild_id))


async def left_at(harness: Harness, guild_id: int) -> object:
    return await harness.scalar("SELECT left_at FROM guild_settings WHERE guild_id = ?", guild_id)


async def test_a_server_without_settings_has_none(harness: Harness) -> None:
    store = harness.guild_settings
    assert await store.guild_overrides(GUILD) == {}
    assert await store.guild_setting_changes(GUILD) == []
    assert await store.guilds_with_settings() == []
    assert await store.forget_guild(GUILD) is False
    assert await store.mark_guilds_left([GUILD], harness.clock()) == 0
    assert await store.mark_guilds_present([GUILD]) == 0
    assert await store.purge_guilds_left_before(harness.clock() + timedelta(days=1)) == []
    assert await harness.counts("guild_settings", "guild_setting_changes") == {
        "guild_settings": 0,
        "guild_setting_changes": 0,
    }


async def test_an_update_sets_the_values_returns_before_and_after_and_logs_each_change(harness: Harness) -> None:
    store, clock = harness.guild_settings, harness.clock
    changes = {"card_channel": CHANNEL, "max_active": 3, "safety": True, "roles": [ROLE_A, ROLE_B], "note": "é"}

    before, after = await store.update_guild_overrides(GUILD, changes, changed_by=ADMIN)

    assert before == {}
    assert after == changes
    assert await store.guild_overrides(GUILD) == changes  # big ids kept exactly, inside JSON too
    assert await store.guilds_with_settings() == [GUILD]
    logged = await store.guild_setting_changes(GUILD)
    assert all(isinstance(change, GuildSettingChange) for change in logged)
    assert [(c.key, c.old, c.new) for c in reversed(logged)] == [(key, None, value) for key, value in changes.items()]
    assert {(c.guild_id, c.changed_by, c.changed_at) for c in logged} == {(GUILD, ADMIN, clock())}
    assert all(c.changed_at.utcoffset() == timedelta(0) for c in logged)
    assert await harness.rows("SELECT guild_id, changed_by FROM guild_setting_changes WHERE old_value IS NULL") == [
        (GUILD, ADMIN)
    ] * len(changes)  # "the default" is SQL NULL, not JSON null
    assert await left_at(harness, GUILD) is None


async def test_only_real_changes_are_logged(harness: Harness) -> None:
    store, clock = harness.guild_settings, harness.clock
    await store.update_guild_overrides(GUILD, {"max_active": 3, "safety": True}, changed_by=ADMIN)
    clock.advance(60)

    before, after = await store.update_guild_overrides(
        GUILD, {"max_active": 3, "safety": False, "roles": None}, changed_by=7
    )  # same value, a real change, and the default for a key that was never set

    assert before == {"max_active": 3, "safety": True}
    assert after == {"max_active": 3, "safety": False}
    logged = await store.guild_setting_changes(GUILD)
    assert [(c.key, c.old, c.new, c.changed_by, c.changed_at) for c in logged[:1]] == [
        ("safety", True, False, 7, clock())
    ]
    assert await change_rows(harness, GUILD) == 3

    clock.advance(60)
    assert await store.update_guild_overrides(GUILD, {"max_active": 3}, changed_by=7) == (after, after)
    assert await change_rows(harness, GUILD) == 3
    updated = await harness.scalar("SELECT updated_at FROM guild_settings WHERE guild_id = ?", GUILD)
    assert (datetime.fromisoformat(updated) if isinstance(updated, str) else updated) == clock()


async def test_values_are_compared_and_returned_as_stored_json(harness: Harness) -> None:
    store = harness.guild_settings
    _, after = await store.update_guild_overrides(GUILD, {"roles": (ROLE_A,), "limit": 1}, changed_by=ADMIN)
    assert after == {"roles": [ROLE_A], "limit": 1}  # what reading it back gives
    await store.update_guild_overrides(GUILD, {"roles": [ROLE_A]}, changed_by=ADMIN)  # the same list
    assert await change_rows(harness, GUILD) == 2
    await store.update_guild_overrides(GUILD, {"limit": True}, changed_by=ADMIN)  # 1 == True, but not in JSON
    newest = (await store.guild_setting_changes(GUILD, limit=1))[0]
    assert (newest.key, newest.old, newest.new) == ("limit", 1, True)
    assert (await store.guild_overrides(GUILD))["limit"] is True

    with pytest.raises(TypeError):
        await store.update_guild_overrides(GUILD, {"limit": 2, "bad": object()}, changed_by=ADMIN)
    assert await store.guild_overrides(GUILD) == {"roles": [ROLE_A], "limit": True}  # nothing written
    assert await change_rows(harness, GUILD) == 3


async def test_none_resets_a_setting_to_the_default_and_an_empty_row_is_kept(harness: Harness) -> None:
    store = harness.guild_settings
    await store.update_guild_overrides(GUILD, {"max_active": 3, "roles": [ROLE_A]}, changed_by=ADMIN)

    before, after = await store.update_guild_overrides(GUILD, {"max_active": None}, changed_by=ADMIN)
    assert (before, after) == ({"max_active": 3, "roles": [ROLE_A]}, {"roles": [ROLE_A]})
    newest = (await store.guild_setting_changes(GUILD))[0]
    assert (newest.key, newest.old, newest.new) == ("max_active", 3, None)

    assert await store.update_guild_overrides(GUILD, {"roles": None}, changed_by=ADMIN) == ({"roles": [ROLE_A]}, {})
    assert await store.guild_overrides(GUILD) == {}
    assert await store.guilds_with_settings() == [GUILD]  # the row holds the change log
    assert await change_rows(harness, GUILD) == 4
    assert await harness.scalar("SELECT COUNT(*) FROM guild_setting_changes WHERE new_value IS NULL") == 2


async def test_two_servers_stay_independent(harness: Harness) -> None:
    store = harness.guild_settings
    await store.update_guild_overrides(GUILD, {"max_active": 3}, changed_by=ADMIN)
    await store.update_guild_overrides(OTHER, {"max_active": 5, "safety": False}, changed_by=9)
    await store.update_guild_overrides(GUILD, {"max_active": None}, changed_by=ADMIN)

    assert await store.guild_overrides(GUILD) == {}
    assert await store.guild_overrides(OTHER) == {"max_active": 5, "safety": False}
    assert [(c.guild_id, c.key, c.new) for c in await store.guild_setting_changes(GUILD)] == [
        (GUILD, "max_active", None),
        (GUILD, "max_active", 3),
    ]
    assert [(c.key, c.changed_by) for c in await store.guild_setting_changes(OTHER)] == [
        ("safety", 9),
        ("max_active", 9),
    ]
    assert await store.guilds_with_settings() == sorted([GUILD, OTHER])


async def test_the_change_log_is_newest_first_and_limited(harness: Harness) -> None:
    store, clock = harness.guild_settings, harness.clock
    for value in range(12):
        await store.update_guild_overrides(GUILD, {"max_active": value}, changed_by=ADMIN)
        clock.advance(1)
    logged = await store.guild_setting_changes(GUILD)
    assert [c.new for c in logged] == list(range(11, 1, -1))  # ten by default
    assert [(c.old, c.new) for c in await store.guild_setting_changes(GUILD, limit=2)] == [(10, 11), (9, 10)]
    assert logged[0].changed_at - logged[-1].changed_at == timedelta(seconds=9)


async def test_servers_left_are_kept_until_purged_and_a_return_clears_the_mark(harness: Harness) -> None:
    store, clock = harness.guild_settings, harness.clock
    a, b, c, never = 101, 102, 2**62 + 103, 104
    for guild in (a, b, c):
        await store.update_guild_overrides(guild, {"max_active": guild % 7}, changed_by=ADMIN)
    first = clock.advance(hours=1)

    assert await store.mark_guilds_left([a, b, never], first) == 2
    assert await store.guilds_with_settings() == [c]
    assert await store.guild_overrides(a) == {"max_active": a % 7}  # kept while the bot is away
    assert await store.mark_guilds_left([a, c], first + timedelta(days=3)) == 1  # a keeps its first time
    assert await store.guilds_with_settings() == []

    assert await store.mark_guilds_present([c, never]) == 1
    assert await store.mark_guilds_present([c]) == 0  # no longer marked
    assert await store.guilds_with_settings() == [c]
    assert await left_at(harness, c) is None

    clock.advance(hours=1)
    await store.update_guild_overrides(b, {"safety": True}, changed_by=ADMIN)  # an update means it is back
    assert await store.guilds_with_settings() == [b, c]
    assert await store.mark_guilds_left([b], first) == 1

    assert await store.purge_guilds_left_before(first) == []  # strictly before
    assert sorted(await store.purge_guilds_left_before(first + timedelta(seconds=1))) == [a, b]
    assert await store.guild_overrides(a) == {} and await store.guild_setting_changes(b) == []
    assert await change_rows(harness, a) == await change_rows(harness, b) == 0  # the log went with them
    assert await store.guild_overrides(c) == {"max_active": c % 7} and await change_rows(harness, c) == 1
    assert await store.purge_guilds_left_before(first + timedelta(days=10)) == []

    with pytest.raises(ValueError, match="timezone-aware"):
        await store.mark_guilds_left([c], datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.purge_guilds_left_before(datetime(2030, 1, 1))
    assert await store.mark_guilds_left([], first) == 0 and await store.mark_guilds_present([]) == 0


async def test_forgetting_a_server_deletes_its_row_and_change_log(harness: Harness) -> None:
    store = harness.guild_settings
    await store.update_guild_overrides(GUILD, {"max_active": 3, "safety": True}, changed_by=ADMIN)
    await store.update_guild_overrides(OTHER, {"max_active": 5}, changed_by=ADMIN)

    assert await store.forget_guild(GUILD) is True
    assert await store.guild_overrides(GUILD) == {}
    assert await store.guild_setting_changes(GUILD) == []
    assert await change_rows(harness, GUILD) == 0
    assert await store.forget_guild(GUILD) is False
    assert await store.guild_overrides(OTHER) == {"max_active": 5} and await change_rows(harness, OTHER) == 1
    assert await store.guilds_with_settings() == [OTHER]


async def test_concurrent_updates_of_one_server_keep_every_key(harness: Harness) -> None:
    """On PostgreSQL the updates run on several pooled connections at once: on a new row (all
    insert it) and on an existing one (all read it); none may write over another's key."""
    store = harness.guild_settings
    keys = [f"key_{index}" for index in range(8)]
    for guild, start in ((GUILD, {}), (OTHER, {"existing": 1})):
        if start:
            await store.update_guild_overrides(guild, start, changed_by=ADMIN)
        results = await asyncio.gather(
            *(store.update_guild_overrides(guild, {key: n}, changed_by=n) for n, key in enumerate(keys))
        )
        assert await store.guild_overrides(guild) == {**start, **{key: n for n, key in enumerate(keys)}}
        assert await change_rows(harness, guild) == len(start) + len(keys)
        # Each update saw the ones before it: the "before" sizes are the serial order.
        assert sorted(len(before) for before, _ in results) == [len(start) + n for n in range(len(keys))]
