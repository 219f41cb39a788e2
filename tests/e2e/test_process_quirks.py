"""The real `lorabot run` process against the provider's ambiguous answers: a base URL that
redirects, a full queue, a transient "not found" and lost webhooks, all in one run."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.jobs.states import JobState
from tests.e2e.databases import wait_stored_job
from tests.e2e.harness import ALICE, API_KEY, BotProcess, open_fakes
from tests.e2e.test_process import started, train_and_start


@pytest.fixture
async def fakes() -> AsyncIterator[tuple]:
    fake, sim = await open_fakes()
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()


@pytest.mark.parametrize("code", [301, 302])
async def test_a_base_url_that_redirects_a_post_stops_the_bot_naming_the_setting(
    tmp_path: Path, fakes: tuple, code: int
) -> None:
    fake, sim = fakes
    sim.simulator.set_faults(redirect_status=code, redirect_target="https://api.example.net/v9")
    bot = BotProcess(tmp_path, fake, sim.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run",  # no .env in tmp_path: the environment only
        env=bot.env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert proc.returncode == 2, text
    assert "SDAPI_BASE_URL" in text and "https://api.example.net/v9/api/v3/finetune_list" in text
    assert "Traceback" not in text
    assert API_KEY not in text
    assert not [r for r in sim.simulator.requests if r.endpoint == "lora_fine_tune"]


async def test_a_full_queue_a_transient_not_found_and_lost_webhooks_still_end_ready(
    tmp_path: Path, fakes: tuple
) -> None:
    fake, sim = fakes
    sim.simulator.set_faults(
        fail_submission=1,
        fail_submission_kind="queue_full",
        queue_retry_after=1,
        error_http_status=True,
        drop_webhooks=True,
    )
    bot = BotProcess(tmp_path, fake, sim.url, RECONCILE_INTERVAL_SECONDS="10")
    await started(bot, fake)
    try:
        job_id = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.training_id is not None)
        await sim.simulator.wait_until_settled(row.training_id, within=30)
        sim.simulator.set_faults(status_not_found=1, status_not_found_shape="html")
        row = await wait_stored_job(
            tmp_path, job_id, lambda r: r.state in (JobState.MODEL_READY, JobState.FAILED), timeout=60
        )
        assert row.state is JobState.MODEL_READY, row.last_error
        dm = await fake.wait_for(lambda: fake.dms_to(ALICE) or None, 30, "the ready DM")
        assert row.training_id in dm[0].content
    finally:
        assert await bot.stop() == 0, bot.log
    assert len(sim.simulator.trainings) == 1, "created exactly once"
    statuses = [r.http_status for r in sim.simulator.requests if r.endpoint == "lora_fine_tune"]
    assert statuses == [429, 200]
    polls = [r.http_status for r in sim.simulator.requests if r.endpoint == "fine_tune_status"]
    assert 404 in polls and polls[-1] == 200
    assert "queue is full" in bot.log
