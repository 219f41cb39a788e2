"""Two real `lorabot run` processes on one PostgreSQL schema, one fake Discord and one simulator:
each runs one of the two gateway shards (the member's guild is on the first's), and a round-robin
proxy spreads the provider's webhooks across both. The leader is SIGKILLed while the training runs:
the survivor takes the lead within the leader interval, the webhooks keep landing on it, the job
still becomes ready, and the owner gets exactly one ready DM, sent once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.delivery.messenger import nonce_for
from bot.discord_standin import FakeDiscord, shard_for
from bot.jobs.states import JobState
from bot.simulator.app import RunningSimulator
from bot.store.open import open_stores
from tests.e2e.databases import database_url, postgres_only, wait_stored_job
from tests.e2e.harness import ALICE, GUILD, BotProcess, open_fakes, train_and_start
from tests.e2e.proxy import RoundRobinProxy

pytestmark = postgres_only("two processes share one database only on PostgreSQL")

LEADER_INTERVAL = 1.0
#: Seconds per status of the simulated training: eight webhooks over about 5 s.
STEP_SECONDS = 0.6


def directory(tmp_path: Path, name: str) -> Path:
    """A process's own directory (its log); the database is the test's, shared."""
    path = tmp_path / name
    path.mkdir()
    return path


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeDiscord, RunningSimulator]]:
    fake, sim = await open_fakes(step_seconds=STEP_SECONDS)
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()


async def healthz(bot: BotProcess) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(f"http://127.0.0.1:{bot.port}/healthz")
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body


async def wait_health(bot: BotProcess, check: Any, timeout: float, what: str) -> dict[str, Any]:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await healthz(bot)
        if body is not None and check(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: /healthz never matched; last {body}\n{bot.log}")
        await asyncio.sleep(0.05)


def leads(body: dict[str, Any]) -> bool:
    return bool(body.get("leadership", {}).get("leader"))


def reconciles(body: dict[str, Any]) -> bool:
    return body.get("tasks", {}).get("reconciler", {}).get("state") == "running"


async def start_process(bot: BotProcess, fake: FakeDiscord, shard: int) -> None:
    """Start `bot` and wait until it runs `shard` and answers /healthz with 200."""
    await bot.start()
    await fake.wait_for(lambda: shard in fake.gateway.live_shards() or None, 30, f"shard {shard} connected")
    await wait_health(bot, lambda body: body["status"] == "ok", 30, "the process is ready")


async def test_the_leader_killed_mid_training_loses_nothing_and_repeats_nothing(
    tmp_path: Path, fakes: tuple[FakeDiscord, RunningSimulator]
) -> None:
    fake, sim = fakes
    guild_shard = shard_for(GUILD, 2)
    env = {"LEADER_INTERVAL_SECONDS": str(LEADER_INTERVAL), "SHARD_COUNT": "2"}
    first = BotProcess(directory(tmp_path, "first"), fake, sim.url, SHARD_IDS=str(guild_shard), **env)
    second = BotProcess(directory(tmp_path, "second"), fake, sim.url, SHARD_IDS=str(1 - guild_shard), **env)
    proxy = RoundRobinProxy([first.port, second.port])
    await proxy.start()
    for bot in (first, second):  # the provider's webhooks go to the one public address
        bot.env["PUBLIC_URL"] = proxy.url
    stores = await open_stores(database_url(tmp_path))
    try:
        await start_process(first, fake, guild_shard)
        await wait_health(first, leads, 10, "the only process leads")
        await start_process(second, fake, 1 - guild_shard)
        tried = await wait_health(second, lambda body: body["leadership"]["since"], 10, "the second tried to lead")
        assert not leads(tried) and leads((await healthz(first)) or {})
        assert [s.shard for s in fake.gateway.sessions_for(GUILD)] == [[guild_shard, 2]]
        assert [((await healthz(bot)) or {}).get("shards", {}).get("ids") for bot in (first, second)] == [
            [guild_shard],
            [1 - guild_shard],
        ]

        job_id = await train_and_start(fake)
        other_shard = fake.gateway.live_shards()[1 - guild_shard]
        assert not [frame for _seq, frame in other_shard.backlog if frame["t"] == "INTERACTION_CREATE"]
        job = await wait_stored_job(tmp_path, job_id, lambda j: j.training_id is not None)
        assert job.training_id is not None
        # Under way: each process has taken a webhook, and more are to come.
        await sim.simulator.wait_for(lambda: bool(proxy.to(first.port)) and bool(proxy.to(second.port)), 20)
        running = await stores.jobs.require_job(job_id)
        assert not running.state.is_terminal, running

        health = {bot: (await healthz(bot)) or {} for bot in (first, second)}
        leading = [bot for bot in (first, second) if leads(health[bot])]
        assert len(leading) == 1, f"exactly one process leads: {health}"
        leader, survivor = leading[0], second if leading[0] is first else first
        assert reconciles(health[leader]) and not reconciles(health[survivor]), health
        await leader.kill()
        # Within one interval (plus a second for the server to end the dead session and for /healthz),
        # the survivor holds the lead and runs the reconciler.
        await wait_health(
            survivor, lambda body: leads(body) and reconciles(body), LEADER_INTERVAL + 1, "the lead moves"
        )

        ready = await wait_stored_job(tmp_path, job_id, lambda j: j.state.is_terminal, timeout=30)
        assert ready.state is JobState.MODEL_READY, ready.last_error
        dm_key = f"dm:{job_id}:{JobState.MODEL_READY.value}"
        deadline = asyncio.get_running_loop().time() + 20
        while not await stores.jobs.outbox_delivered(dm_key):
            assert asyncio.get_running_loop().time() < deadline, "the ready DM was never marked delivered"
            await asyncio.sleep(0.05)

        ready_dms = [m for m in fake.dms_to(ALICE) if "is ready" in (m.content or "")]
        assert len(ready_dms) == 1, [m.content for m in fake.dms_to(ALICE)]
        posts = [r for r in fake.requests if r.method == "POST" and isinstance(r.json, dict)]
        nonces = Counter(r.json["nonce"] for r in posts if r.json.get("nonce"))
        assert nonces[nonce_for(dm_key)] == 1
        assert all(count == 1 for count in nonces.values()), nonces
        assert len(sim.simulator.trainings) == 1, "the training was submitted once"
        # Webhooks reached both processes; after the kill only the survivor answered them.
        assert proxy.to(leader.port) and proxy.to(survivor.port)
        after = [f for f in proxy.forwarded if f.body and f.body.get("training_status") == "model_ready"]
        assert [(f.port, f.status) for f in after] == [(survivor.port, 200)]
    finally:
        await stores.close()
        await proxy.close()
        for bot in (first, second):
            if bot.proc is not None and bot.proc.returncode is None:
                assert await bot.stop() == 0, bot.log
