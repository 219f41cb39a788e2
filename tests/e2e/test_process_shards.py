"""`lorabot run` over gateway shards: a process with SHARD_COUNT=2 SHARD_IDS=0 runs shard 0 only and
/healthz says so; a second process for the same shard is refused (exit 2); one for shard 1 takes the
other guilds. Each process has its own SQLite file here (on the PostgreSQL pass, the test's schema):
the gateway is what they share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.discord_standin import FakeDiscord, GatewaySession, shard_for
from tests.e2e.harness import ALICE, CHANNEL, GUILD, BotProcess, open_fakes

GUILD_ON_SHARD_0 = GUILD + (1 << 22)
CHANNEL_ON_SHARD_0 = GUILD_ON_SHARD_0 + 1


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[Any, Any]]:
    fake, sim = await open_fakes()
    fake.add_guild(GUILD_ON_SHARD_0, name="Shard zero", channels={CHANNEL_ON_SHARD_0: "general"})
    fake.set_member(GUILD_ON_SHARD_0, ALICE)
    assert (shard_for(GUILD, 2), shard_for(GUILD_ON_SHARD_0, 2)) == (1, 0)
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()


def bot_process(tmp_path: Path, name: str, fake: FakeDiscord, sim_url: str, **env: str) -> BotProcess:
    directory = tmp_path / name
    directory.mkdir()
    return BotProcess(directory, fake, sim_url, **env)


async def healthy(bot: BotProcess, timeout: float = 30) -> dict[str, Any]:  # noqa: ASYNC109
    """The /healthz body once it answers 200."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    async with httpx.AsyncClient(timeout=2) as client:
        while asyncio.get_running_loop().time() < deadline:
            try:
                response = await client.get(f"http://127.0.0.1:{bot.port}/healthz")
            except httpx.TransportError:
                response = None
            if response is not None:
                last = response.json()
                if response.status_code == 200:
                    return dict(last)
            await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz never answered 200; last {last}\n{bot.log}")


async def mymodels(fake: FakeDiscord, guild_id: int, channel_id: int) -> str:
    payload = fake.slash_command_payload("mymodels", user_id=ALICE, guild_id=guild_id, channel_id=channel_id)
    rec = await fake.send_interaction(payload)
    reply = await rec.wait_original(timeout=15)
    return reply.content or " ".join(str(e.get("description", "")) for e in reply.embeds)


def interactions(session: GatewaySession) -> list[str | None]:
    return [frame["d"].get("guild_id") for _seq, frame in session.backlog if frame["t"] == "INTERACTION_CREATE"]


async def test_processes_run_their_own_shards_and_healthz_reports_them(tmp_path: Path, fakes: tuple) -> None:
    fake, sim = fakes
    first = bot_process(tmp_path, "first", fake, sim.url, SHARD_COUNT="2", SHARD_IDS="0")
    await first.start()
    try:
        body = await healthy(first)
        assert body["status"] == "ok" and body["discord"] == "connected", body
        assert body["shards"]["count"] == 2 and body["shards"]["ids"] == [0], body
        assert [(s["id"], s["status"]) for s in body["shards"]["states"]] == [(0, "connected")], body
        (session,) = fake.gateway.live_sessions()
        assert session.shard == [0, 2]
        assert fake.gateway.sessions_for(GUILD) == []  # shard 1: nobody runs it yet
        await mymodels(fake, GUILD_ON_SHARD_0, CHANNEL_ON_SHARD_0)
        assert interactions(session) == [str(GUILD_ON_SHARD_0)]
        assert "running shard(s) 0 of 2" in first.log

        # The same shard again: Discord (here, the stand-in) refuses it; the process stops with exit 2.
        twin = bot_process(tmp_path, "twin", fake, sim.url, SHARD_COUNT="2", SHARD_IDS="0")
        await twin.start()
        assert twin.proc is not None
        code = await asyncio.wait_for(twin.proc.wait(), 30)
        assert code == 2, twin.log
        assert "SHARD_IDS: Discord refused shard 0 of SHARD_COUNT=2" in twin.log

        # The other shard: a second process takes the guilds on shard 1.
        second = bot_process(tmp_path, "second", fake, sim.url, SHARD_COUNT="2", SHARD_IDS="1")
        await second.start()
        try:
            body = await healthy(second)
            assert body["shards"]["ids"] == [1] and body["shards"]["states"][0]["status"] == "connected", body
            shards = fake.gateway.live_shards()
            assert sorted(shards) == [0, 1] and shards[1].shard == [1, 2]
            await mymodels(fake, GUILD, CHANNEL)
            assert interactions(shards[1]) == [str(GUILD)]
            assert interactions(session) == [str(GUILD_ON_SHARD_0)]  # nothing more for the first process
        finally:
            assert await second.stop() == 0, second.log
    finally:
        assert await first.stop() == 0, first.log
