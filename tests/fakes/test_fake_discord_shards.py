"""Sharding in the fake Discord, driven by real discord.py `AutoShardedBot` clients: each shard's session
gets only its guilds (READY, GUILD_CREATE, interactions), DMs go to shard 0, and bad shards are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from bot.discord_standin import FakeDiscord, GatewaySession, pointed_at, shard_for

USER = 910_000_000_000_000_003


def guild_on(shard: int, count: int, *, after: int = 0) -> int:
    """A realistic guild id whose events go to `shard` of `count` (the `after`-th such id)."""
    base = 1_200_000_000_000_000_000
    candidates = (base + (step << 22) for step in range(4 * count * (after + 1)))
    return [g for g in candidates if shard_for(g, count) == shard][after]


G0 = guild_on(0, 2)
G1 = guild_on(1, 2)
CHANNEL0 = G0 + 1
CHANNEL1 = G1 + 1


class ShardBot(commands.AutoShardedBot):
    """A bot answering /where with its label and the shard the interaction's guild is on."""

    def __init__(self, label: str, **options: Any) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05, **options)
        self.label = label
        self.seen: list[int] = []  # ids of the interactions this client received

    async def setup_hook(self) -> None:
        @self.tree.command(description="Which client and shard answer")
        async def where(interaction: discord.Interaction) -> None:
            self.seen.append(interaction.id)
            shard = interaction.guild.shard_id if interaction.guild is not None else None
            await interaction.response.send_message(f"{self.label} shard {shard}")

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None  # discord.py waits 5 s before each further shard's IDENTIFY; the fake has no such limit


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(shard_count=2) as server:
        server.add_guild(G0, name="Shard zero", channels={CHANNEL0: "general"})
        server.add_guild(G1, name="Shard one", channels={CHANNEL1: "general"})
        server.add_user(USER, username="alice")
        server.set_member(G0, USER)
        server.set_member(G1, USER)
        with pointed_at(server):
            yield server
        assert server.errors == []


@pytest.fixture
async def start(fake: FakeDiscord) -> AsyncIterator[Callable[..., Any]]:
    """Start a `ShardBot` against the fake and wait until all its shards are ready; closed at the end."""
    running: list[tuple[ShardBot, asyncio.Task[None]]] = []

    async def launch(label: str, **options: Any) -> ShardBot:
        bot = ShardBot(label, **options)
        task = asyncio.create_task(bot.start(fake.token))
        running.append((bot, task))
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        return bot

    yield launch
    for bot, task in running:
        await bot.close()
        await asyncio.wait_for(task, 10)


def dispatched(session: GatewaySession, event: str) -> list[dict[str, Any]]:
    """The payloads of `event` sent to a session so far."""
    return [frame["d"] for _seq, frame in session.backlog if frame["t"] == event]


async def where(fake: FakeDiscord, guild_id: int | None, channel_id: int | None = None) -> str:
    if guild_id is None:
        channel_id = fake.dm_channel_id(USER)
    payload = fake.slash_command_payload("where", user_id=USER, guild_id=guild_id, channel_id=channel_id)
    rec = await fake.send_interaction(payload)
    return (await rec.wait_original()).content


async def test_each_shard_session_gets_only_its_guilds(fake: FakeDiscord, start: Callable[..., Any]) -> None:
    first = await start("first", shard_count=2, shard_ids=[0])
    second = await start("second", shard_count=2, shard_ids=[1])

    sessions = fake.gateway.live_shards()
    assert sorted(sessions) == [0, 1]
    assert (sessions[0].shard, sessions[1].shard) == ([0, 2], [1, 2])
    for shard, guild in ((0, G0), (1, G1)):
        (ready,) = dispatched(sessions[shard], "READY")
        assert ready["shard"] == [shard, 2]
        assert [g["id"] for g in ready["guilds"]] == [str(guild)]
        assert [g["id"] for g in dispatched(sessions[shard], "GUILD_CREATE")] == [str(guild)]
    assert [g.id for g in first.guilds] == [G0] and [g.id for g in second.guilds] == [G1]
    assert first.get_guild(G0) is not None and first.get_guild(G0).shard_id == 0  # type: ignore[union-attr]


async def test_an_interaction_reaches_only_the_client_running_its_guilds_shard(
    fake: FakeDiscord, start: Callable[..., Any]
) -> None:
    first = await start("first", shard_count=2, shard_ids=[0])
    second = await start("second", shard_count=2, shard_ids=[1])
    sessions = fake.gateway.live_shards()

    assert await where(fake, G1, CHANNEL1) == "second shard 1"
    assert (len(first.seen), len(second.seen)) == (0, 1)
    assert await where(fake, G0, CHANNEL0) == "first shard 0"
    assert (len(first.seen), len(second.seen)) == (1, 1)
    assert await where(fake, None) == "first shard None"  # a DM: shard 0
    assert (len(first.seen), len(second.seen)) == (2, 1)

    assert [d.get("guild_id") for d in dispatched(sessions[0], "INTERACTION_CREATE")] == [str(G0), None]
    assert [d.get("guild_id") for d in dispatched(sessions[1], "INTERACTION_CREATE")] == [str(G1)]


async def test_guild_events_after_ready_go_to_their_shard(fake: FakeDiscord, start: Callable[..., Any]) -> None:
    first = await start("first", shard_count=2, shard_ids=[0])
    second = await start("second", shard_count=2, shard_ids=[1])
    sessions = fake.gateway.live_shards()
    joined = guild_on(1, 2, after=1)

    fake.add_guild(joined, name="Joined later")
    await fake.wait_for(lambda: second.get_guild(joined), 5, "the new guild on the second client")
    fake.add_channel(joined, joined + 7, name="new-channel")
    await fake.wait_for(lambda: second.get_channel(joined + 7), 5, "the new channel on the second client")

    assert first.get_guild(joined) is None
    assert all(d["id"] != str(joined) for d in dispatched(sessions[0], "GUILD_CREATE"))
    assert dispatched(sessions[0], "CHANNEL_CREATE") == []
    # The bot's own message in a guild of shard 1 is echoed there; a DM's only to shard 0.
    channel = second.get_channel(CHANNEL1)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("hello shard one")
    user = await second.fetch_user(USER)
    await user.send("hello from shard one's client")
    await fake.wait_for(lambda: dispatched(sessions[0], "MESSAGE_CREATE"), 5, "the DM echo on shard 0")
    await fake.wait_for(lambda: dispatched(sessions[1], "MESSAGE_CREATE"), 5, "the guild echo on shard 1")
    assert [d.get("guild_id") for d in dispatched(sessions[0], "MESSAGE_CREATE")] == [None]
    assert [d.get("guild_id") for d in dispatched(sessions[1], "MESSAGE_CREATE")] == [str(G1)]


async def test_removing_the_bot_from_a_guild_reaches_only_its_shard(
    fake: FakeDiscord, start: Callable[..., Any]
) -> None:
    first = await start("first", shard_count=2, shard_ids=[0])
    second = await start("second", shard_count=2, shard_ids=[1])
    sessions = fake.gateway.live_shards()

    fake.remove_guild(G1)
    await fake.wait_for(lambda: second.get_guild(G1) is None, 5, "the removal on the second client")
    assert dispatched(sessions[1], "GUILD_DELETE") == [{"id": str(G1)}]
    assert dispatched(sessions[0], "GUILD_DELETE") == []
    assert first.get_guild(G0) is not None and [g.id for g in second.guilds] == []

    fake.guild_outage(G0)
    await fake.wait_for(lambda: dispatched(sessions[0], "GUILD_DELETE"), 5, "the outage on shard 0")
    assert dispatched(sessions[0], "GUILD_DELETE") == [{"id": str(G0), "unavailable": True}]
    assert dispatched(sessions[1], "GUILD_DELETE") == [{"id": str(G1)}]

    fake.add_guild(G1, name="Shard one again", channels={CHANNEL1: "general"})
    await fake.wait_for(lambda: second.get_guild(G1), 5, "the guild back on the second client")
    assert [g["id"] for g in dispatched(sessions[1], "GUILD_CREATE")] == [str(G1), str(G1)]
    assert all(g["id"] != str(G1) for g in dispatched(sessions[0], "GUILD_CREATE"))
    assert await where(fake, G1, CHANNEL1) == "second shard 1"


async def test_without_a_shard_count_the_client_runs_the_recommended_shards(
    fake: FakeDiscord, start: Callable[..., Any]
) -> None:
    bot = await start("only")

    assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
    assert sorted(s.shard for s in fake.gateway.live_sessions()) == [[0, 2], [1, 2]]  # type: ignore[type-var]
    assert sorted(g.id for g in bot.guilds) == sorted([G0, G1])
    assert await where(fake, G0, CHANNEL0) == "only shard 0"
    assert await where(fake, G1, CHANNEL1) == "only shard 1"
    assert [r.status for r in fake.requests_to("GET", "/gateway/bot")] == [200]


async def test_a_shard_already_connected_elsewhere_is_refused_with_4010(
    fake: FakeDiscord, start: Callable[..., Any]
) -> None:
    await start("first", shard_count=2, shard_ids=[0])
    intruder = ShardBot("intruder", shard_count=2, shard_ids=[0])
    try:
        with pytest.raises(discord.ConnectionClosed) as closed:
            await asyncio.wait_for(intruder.start(fake.token), 10)
    finally:
        await intruder.close()
    assert closed.value.code == 4010 and closed.value.shard_id == 0
    assert [s.shard for s in fake.gateway.live_sessions()] == [[0, 2]]
    assert await where(fake, G0, CHANNEL0) == "first shard 0"


async def test_unsharded_sessions_may_run_side_by_side_and_get_everything(
    fake: FakeDiscord, start: Callable[..., Any]
) -> None:
    await start("one", shard_count=1)
    await start("two", shard_count=1)
    sessions = fake.gateway.live_sessions()
    assert [s.shard for s in sessions] == [[0, 1], [0, 1]]
    for session in sessions:
        assert sorted(g["id"] for g in dispatched(session, "GUILD_CREATE")) == sorted([str(G0), str(G1)])


# -- the IDENTIFY's shard, over a raw websocket -------------------------------------------------------------------


async def identify_close_code(fake: FakeDiscord, shard: Any) -> int | None:
    """IDENTIFY with `shard` (omitted when None); the close code, or None when READY came instead."""
    identify: dict[str, Any] = {"token": fake.token, "intents": 1, "properties": {}}
    if shard is not None:
        identify["shard"] = shard
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10
        await ws.send_str(json.dumps({"op": 2, "d": identify}))
        message = await ws.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.TEXT:
            assert json.loads(message.data)["t"] == "READY"
            return None
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return ws.close_code


@pytest.mark.parametrize("shard", [[2, 2], [0, 0], [-1, 2], [0], "0,2", [0, "2"]])
async def test_an_invalid_shard_is_closed_with_4010(fake: FakeDiscord, shard: Any) -> None:
    assert await identify_close_code(fake, shard) == 4010
    assert fake.gateway.sessions == {}


async def test_sharding_required_closes_sessions_with_too_few_shards_with_4011() -> None:
    async with FakeDiscord(shard_count=2, require_sharding=True) as fake:
        assert await identify_close_code(fake, None) == 4011
        assert await identify_close_code(fake, [0, 1]) == 4011
        assert await identify_close_code(fake, [1, 2]) is None
        assert [s.shard for s in fake.gateway.sessions.values()] == [[1, 2]]


async def test_wait_until_connected_waits_for_the_named_shards(fake: FakeDiscord, start: Callable[..., Any]) -> None:
    await start("first", shard_count=2, shard_ids=[0])
    with pytest.raises(TimeoutError, match=r"for shards \[0, 1\].*shards \[0\]"):
        await fake.wait_until_connected(0.2, shards=[0, 1])
    await start("second", shard_count=2, shard_ids=[1])
    sessions = await fake.wait_until_connected(1, shards=[0, 1])
    assert sorted(s.shard_id for s in sessions) == [0, 1]
