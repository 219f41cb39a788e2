"""LoraBot over gateway shards: the shards it runs from SHARD_COUNT / SHARD_IDS, what /healthz says about
them, the gateway it connects to, Discord refusing a shard, and a stop while a shard reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock

import discord
import httpx
import pytest

from bot.config import ConfigError, Settings
from bot.discord_bot import LoraBot, Services, point_discord_at
from bot.discord_standin import FakeDiscord, shard_for
from bot.jobs.ports import KeyValue
from bot.sharding import ShardsHealth, gateway_refusal, latency_ms
from tests.e2e.harness import GUILD, open_world

#: The harness's guild is on shard 1 of 2; this one is on shard 0.
GUILD_ON_SHARD_0 = GUILD + (1 << 22)
assert (shard_for(GUILD, 2), shard_for(GUILD_ON_SHARD_0, 2)) == (1, 0)


@pytest.fixture
def discord_defaults() -> Iterator[None]:
    """Put discord.py's REST base and gateway back after a test pointed them at a fake."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


def bare_bot(settings: Settings) -> LoraBot:
    """A LoraBot that connects without its cogs or services (only the notifier and the server settings
    are called, on READY)."""
    bot = LoraBot(settings)
    services = SimpleNamespace(
        notifier=SimpleNamespace(connection_restored=AsyncMock()),
        server_settings=SimpleNamespace(reconcile_presence=AsyncMock()),
    )
    bot.attach(cast(Services, services), cast(KeyValue, SimpleNamespace()))  # setup_hook, its one user, is off
    bot.setup_hook = AsyncMock()  # type: ignore[method-assign]
    return bot


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(shard_count=2, heartbeat_interval_ms=200) as server:
        server.add_guild(GUILD, channels={GUILD + 1: "general"})
        server.add_guild(GUILD_ON_SHARD_0, channels={GUILD_ON_SHARD_0 + 1: "general"})
        yield server


def settings_for(make_settings: Callable[..., Settings], fake: FakeDiscord, **overrides: Any) -> Settings:
    return make_settings(
        discord_token=fake.token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url + "/",  # not what GET /gateway/bot names: which one is used shows
        **overrides,
    )


# -- the shards of this process ----------------------------------------------------------------------------------


def test_the_settings_choose_the_shards(make_settings: Callable[..., Settings]) -> None:
    bot = LoraBot(make_settings(shard_count=4, shard_ids=[3, 1]))
    assert (bot.shard_count, bot.shard_ids, bot.own_shard_ids()) == (4, [1, 3], [1, 3])
    assert bot.shard_health() == {
        "count": 4,
        "ids": [1, 3],
        "states": [
            {"id": 1, "status": "connecting", "latency_ms": None},
            {"id": 3, "status": "connecting", "latency_ms": None},
        ],
    }
    assert bot.connection_status() == "connecting" and not bot.has_connected

    every = LoraBot(make_settings(shard_count=2))
    assert (every.shard_ids, every.own_shard_ids()) == (None, [0, 1])
    unknown = LoraBot(make_settings())  # unset: Discord's recommendation, asked at connect
    assert (unknown.known_shard_count, unknown.own_shard_ids(), unknown.shard_health()["states"]) == (None, [], [])
    assert not unknown.has_connected


async def test_the_bot_has_connected_once_every_one_of_its_shards_has(make_settings: Callable[..., Settings]) -> None:
    bot = LoraBot(make_settings(shard_count=3, shard_ids=[0, 2]))
    await bot.on_shard_connect(0)
    assert not bot.has_connected
    await bot.on_shard_connect(2)
    assert bot.has_connected
    await bot.on_shard_disconnect(2)
    assert bot.has_connected  # "starting" is only until the first sessions; an outage shows in the status
    await bot.close()
    assert bot.connection_status() == "closed" and bot.shard_health()["states"][0]["status"] == "closed"


def test_latency_is_milliseconds_or_none_before_the_first_heartbeat() -> None:
    assert (latency_ms(0.04213), latency_ms(float("inf")), latency_ms(float("nan"))) == (42.1, None, None)


# -- against the fake Discord -----------------------------------------------------------------------------------


async def test_unset_shard_count_runs_the_recommended_shards_on_the_configured_gateway(
    fake: FakeDiscord, make_settings: Callable[..., Settings], discord_defaults: None
) -> None:
    settings = settings_for(make_settings, fake)
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    bot = bare_bot(settings)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_until_connected(15, shards=[0, 1])  # the second shard waits discord.py's 5 s
        await fake.wait_for(lambda: bot.connection_status() == "connected" or None, 10, "both shards up")
        assert bot.has_connected and bot.own_shard_ids() == [0, 1]
        assert sorted(s.shard for s in fake.gateway.live_sessions()) == [[0, 2], [1, 2]]  # type: ignore[type-var]
        # Connected to DISCORD_GATEWAY_URL (…/gateway/), not to the URL GET /gateway/bot answers (…/gateway).
        assert {s.connection.request.path for s in fake.gateway.live_sessions() if s.connection} == {"/gateway/"}

        def heartbeats() -> ShardsHealth | None:
            health = bot.shard_health()
            return health if all(s["latency_ms"] is not None for s in health["states"]) else None

        health = await fake.wait_for(heartbeats, 10, "a heartbeat on each shard")
        assert health["count"] == 2 and [s["status"] for s in health["states"]] == ["connected", "connected"]
        assert all(0 <= cast(float, s["latency_ms"]) < 1000 for s in health["states"])
    finally:
        await bot.close()
        await asyncio.wait_for(task, 10)


async def test_a_stop_while_a_shard_reconnects_ends_the_connection(
    fake: FakeDiscord,
    make_settings: Callable[..., Settings],
    discord_defaults: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """discord.py swallows a cancellation that lands while a shard reconnects; the bot must stop anyway."""
    settings = settings_for(make_settings, fake, shard_count=2, shard_ids=[1])
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    bot = bare_bot(settings)
    await bot.login(fake.token)
    connecting = asyncio.create_task(bot.connect(reconnect=True))
    await fake.wait_until_connected(10, shards=[1])

    reconnecting = asyncio.Event()

    async def never_connects(*args: object, **kwargs: object) -> None:
        reconnecting.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "from_client", never_connects)
    await fake.force_reconnect()  # op 7: the shard reconnects, and hangs there
    await asyncio.wait_for(reconnecting.wait(), 10)
    connecting.cancel()
    results = await asyncio.wait_for(asyncio.gather(connecting, return_exceptions=True), 5)
    assert isinstance(results[0], asyncio.CancelledError)
    assert bot.is_closed()


async def test_healthz_reports_the_shards_of_the_process(tmp_path: Path) -> None:
    world, close = await open_world(tmp_path, shard_count=2, shard_ids=[1])
    try:
        await world.wait_for(lambda: world.app.bot.connection_status() == "connected" or None, what="shard 1 up")
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{world.settings.webhook_port}/healthz")
        body = response.json()
        assert (response.status_code, body["status"], body["discord"]) == (200, "ok", "connected"), body
        assert body["shards"]["count"] == 2 and body["shards"]["ids"] == [1]
        assert [(s["id"], s["status"]) for s in body["shards"]["states"]] == [(1, "connected")]
        assert [s.shard for s in world.fake.gateway.live_sessions()] == [[1, 2]]
        # Its guild is on shard 1: the process answers there.
        rec = await world.command("mymodels")
        await rec.wait_original(timeout=10)
    finally:
        await close()


async def test_discord_refusing_a_shard_stops_the_bot_with_a_configuration_error(
    tmp_path: Path, fake: FakeDiscord, discord_defaults: None
) -> None:
    """A shard that another process already runs (the stand-in refuses it, 4010) is a fatal setting."""
    from bot.app import Application
    from bot.simulator.app import start_simulator
    from tests.e2e.harness import API_KEY, make_settings

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sim = await start_simulator(step_seconds=0.05, api_key=API_KEY)
    first = Application(make_settings(tmp_path / "a", fake, sim.url, shard_count=2, shard_ids=[0]))
    await first.start()
    try:
        await fake.wait_until_connected(10, shards=[0])
        second = Application(make_settings(tmp_path / "b", fake, sim.url, shard_count=2, shard_ids=[0]))
        with pytest.raises(ConfigError) as refused:
            await asyncio.wait_for(second.run(), 20)
        assert str(refused.value).startswith("SHARD_IDS: Discord refused shard 0 of SHARD_COUNT=2 (4010")
        assert [s.shard for s in fake.gateway.live_sessions()] == [[0, 2]]  # the first one carries on
    finally:
        await first.stop()
        await sim.close()


def test_gateway_refusals_name_the_setting(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(shard_count=2, shard_ids=[1])
    assert (gateway_refusal(4010, 1, settings) or "").startswith("SHARD_IDS: Discord refused shard 1 of SHARD_COUNT=2")
    assert (gateway_refusal(4011, 0, settings) or "").startswith("SHARD_COUNT: Discord requires more shards")
    assert gateway_refusal(4000, 0, settings) is None and gateway_refusal(1000, None, settings) is None
