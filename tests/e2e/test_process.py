"""The real `lorabot run` process: a full training through it, SIGTERM, SIGKILL and restart,
and a scan of everything it logged for the secrets it holds."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.discord_standin import FakeDiscord
from bot.jobs.states import JobState
from tests.e2e.databases import wait_stored_job
from tests.e2e.harness import (
    ALICE,
    API_KEY,
    GUILD,
    BotProcess,
    embed_text,
    open_fakes,
    train_and_start,
)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple]:
    fake, sim = await open_fakes()
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()


async def started(bot: BotProcess, fake: FakeDiscord, sessions: int = 1) -> None:
    await bot.start()
    try:
        await fake.wait_until_connected(30, sessions=sessions)
        await fake.wait_for(lambda: fake.commands(GUILD) or None, 30, "commands synced")
    except Exception:
        print(bot.log)
        raise


async def test_a_training_through_the_real_process_then_sigterm(tmp_path: Path, fakes: tuple) -> None:
    fake, sim = fakes
    bot = BotProcess(tmp_path, fake, sim.url)
    await started(bot, fake)
    try:
        job_id = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.state is JobState.MODEL_READY)
        dm = await fake.wait_for(lambda: fake.dms_to(ALICE) or None, 30, "the DM")
        assert row.training_id in dm[0].content
        card = fake.message(row.card_message_id)
        await fake.wait_for(lambda: "Model ready" in embed_text(card) or None, 10, "card edited to ready")
        training = sim.simulator.trainings[row.training_id]
        assert all((i.width, i.height) == (512, 512) for i in training.images)
    finally:
        code = await bot.stop(signal.SIGTERM)
    assert code == 0, bot.log
    assert "stopped cleanly" in bot.log
    # Secrets never appear in the logs of a full run (DEBUG level), nor in anything sent to Discord.
    webhook_secret = training.webhook_url.rsplit("/", 1)[1]
    sent = "\n".join(str(r.json) for r in fake.requests)
    for secret in (fake.token, API_KEY, webhook_secret):
        assert secret not in bot.log
        assert secret not in sent
    assert len(webhook_secret) >= 32


async def test_sigkill_mid_training_loses_nothing_and_repeats_nothing(tmp_path: Path, fakes: tuple) -> None:
    fake, sim = fakes
    sim.simulator.step_seconds = 0.5
    bot = BotProcess(tmp_path, fake, sim.url, RECONCILE_INTERVAL_SECONDS="10")
    await started(bot, fake)
    job_id = await train_and_start(fake)
    row = await wait_stored_job(tmp_path, job_id, lambda r: r.training_id is not None)
    await bot.kill()  # webhooks sent while the bot is down are lost: the provider does not retry
    training = await sim.simulator.wait_until_settled(row.training_id, within=30)
    assert training.status == "model_ready"
    assert any(d.error or d.http_status is None for d in training.deliveries)

    restarted = BotProcess(tmp_path, fake, sim.url, RECONCILE_INTERVAL_SECONDS="10")
    restarted.port = bot.port
    restarted.env.update(WEBHOOK_PORT=str(bot.port), PUBLIC_URL=f"http://127.0.0.1:{bot.port}")
    await started(restarted, fake, sessions=1)
    try:
        # The start-up reconciliation polls the provider and finishes the job.
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.state is JobState.MODEL_READY)
        await fake.wait_for(lambda: fake.dms_to(ALICE) or None, 30, "the DM")
        await asyncio.sleep(1.0)
        assert len(fake.dms_to(ALICE)) == 1
        assert len(sim.simulator.trainings) == 1, "the training must never be submitted twice"
    finally:
        assert await restarted.stop() == 0, restarted.log


async def test_logs_of_a_run_with_failures_hold_no_secret(tmp_path: Path, fakes: tuple) -> None:
    """Every log line of a run with rejected submissions, forged webhooks and an invalid key."""
    import httpx

    fake, sim = fakes
    bot = BotProcess(tmp_path, fake, sim.url)
    await started(bot, fake)
    secrets_seen: list[str] = []
    try:
        sim.simulator.set_faults(fail_submission=1, fail_submission_message="Failed, Try Again")
        failed = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, failed, lambda r: r.state is JobState.FAILED)
        assert "Failed, Try Again" in row.last_error

        good = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, good, lambda r: r.state is JobState.MODEL_READY)
        secrets_seen.append(sim.simulator.trainings[row.training_id].webhook_url.rsplit("/", 1)[1])
        base = f"http://127.0.0.1:{bot.port}/webhooks/training"
        async with httpx.AsyncClient() as client:
            forged = [
                await client.post(f"{base}/{good}/{secrets_seen[0][:-2]}xx", json={"model_id": "x"}),
                await client.post(f"{base}/{failed}/{secrets_seen[0]}", json={"model_id": "x"}),
                await client.post(
                    f"{base}/{good}/{secrets_seen[0]}",
                    content=b"{not json",
                    headers={"content-type": "application/json"},
                ),
            ]
        assert [r.status_code for r in forged] == [404, 404, 400]

        sim.simulator.set_faults(fail_submission=1, fail_submission_kind="invalid_key")
        refused = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, refused, lambda r: r.state is JobState.FAILED)
    finally:
        assert await bot.stop() == 0
    log = bot.log
    assert "rejected" in log  # the failures were logged...
    for secret in (fake.token, API_KEY, *secrets_seen):
        assert secret not in log  # ...without any secret
