"""The real `lorabot run` process killed in the middle of a generation: the pictures are still
delivered exactly once after the restart, and a submission that may have reached the provider
is never sent again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.discord_standin import FakeDiscord
from bot.jobs.generation_model import GenerationState
from bot.jobs.states import JobState
from tests.e2e.databases import stored_records, wait_stored_generation, wait_stored_job
from tests.e2e.harness import ALICE, CHANNEL, GUILD, BotProcess, open_fakes
from tests.e2e.test_process import started, train_and_start


@pytest.fixture
async def fakes() -> AsyncIterator[tuple]:
    fake, sim = await open_fakes()
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()


async def send_imagine(fake: FakeDiscord, **options: object) -> None:
    payload = fake.slash_command_payload(
        "imagine",
        user_id=ALICE,
        guild_id=GUILD,
        channel_id=CHANNEL,
        options={"prompt": "on a beach at sunset", **options},
    )
    rec = await fake.send_interaction(payload)
    await rec.wait_callback()


def results(fake: FakeDiscord) -> list:
    return [m for m in fake.channel_messages(CHANNEL) if "· seed" in (m.content or "") and m.webhook_id is None]


async def trained_bot(tmp_path: Path, fake: FakeDiscord, sim) -> BotProcess:
    bot = BotProcess(tmp_path, fake, sim.url, IMAGINE_COOLDOWN_SECONDS="0")
    await started(bot, fake)
    job_id = await train_and_start(fake)
    await wait_stored_job(tmp_path, job_id, lambda r: r.state is JobState.MODEL_READY)
    return bot


def restarted(bot: BotProcess, tmp_path: Path, fake: FakeDiscord, sim) -> BotProcess:
    again = BotProcess(tmp_path, fake, sim.url, IMAGINE_COOLDOWN_SECONDS="0")
    again.port = bot.port
    again.env.update(WEBHOOK_PORT=str(bot.port), PUBLIC_URL=f"http://127.0.0.1:{bot.port}")
    return again


async def test_sigkill_while_processing_still_delivers_the_pictures_exactly_once(tmp_path: Path, fakes: tuple) -> None:
    fake, sim = fakes
    bot = await trained_bot(tmp_path, fake, sim)
    sim.simulator.set_faults(t2i_processing_steps=4, t2i_eta=1)  # a few seconds of fetching
    await send_imagine(fake, count=2)
    await wait_stored_generation(tmp_path, lambda r: r.state is GenerationState.PROCESSING)
    await bot.kill()

    again = restarted(bot, tmp_path, fake, sim)
    await started(again, fake, sessions=1)
    try:
        found = await fake.wait_for(lambda: results(fake) or None, 40, "the pictures after the restart")
        assert len(found[0].attachments) == 2
        await asyncio.sleep(1.5)
        assert len(results(fake)) == 1, "delivered exactly once"
        assert len(sim.simulator.generations_v6) == 1, "never asked for twice"
        assert [r.endpoint for r in sim.simulator.requests].count("text2img") == 1
        async with stored_records(tmp_path) as records:
            latest = await records.latest_generation()
        assert latest is not None and latest.state is GenerationState.READY
    finally:
        assert await again.stop() == 0, again.log


async def test_sigkill_while_submitting_is_never_resent(tmp_path: Path, fakes: tuple) -> None:
    fake, sim = fakes
    bot = await trained_bot(tmp_path, fake, sim)
    sim.simulator.set_faults(t2i_hold=1, t2i_hold_seconds=20)  # the answer never comes before the kill
    await send_imagine(fake)
    await wait_stored_generation(tmp_path, lambda r: r.state is GenerationState.SUBMITTING)
    await sim.simulator.wait_for(lambda: bool(sim.simulator.generations_v6), 10)
    await bot.kill()

    again = restarted(bot, tmp_path, fake, sim)
    await started(again, fake, sessions=1)
    try:
        row = await wait_stored_generation(tmp_path, lambda r: r.state is GenerationState.UNCERTAIN)
        assert "not asked for again" in row.last_error
        told = await fake.wait_for(lambda: results(fake) or None, 30, "the member is told")
        assert "couldn't make your pictures" in told[0].content and not told[0].attachments
        await asyncio.sleep(1.0)
        assert [r.endpoint for r in sim.simulator.requests].count("text2img") == 1
    finally:
        assert await again.stop() == 0, again.log
