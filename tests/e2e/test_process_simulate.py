"""`lorabot run --simulate` through the real process: no SDAPI_KEY, no SDAPI_BASE_URL, no
PUBLIC_URL; a training runs on the built-in simulator to model_ready, its webhooks come back to
the local webhook server, and the card and the DM say plainly that it was simulated."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from bot.jobs.states import JobState
from bot.render import SIMULATED_NOTE
from tests.e2e.databases import wait_stored_job
from tests.e2e.harness import ALICE, BotProcess, embed_text, open_fakes
from tests.e2e.test_process import started, train_and_start


class SimulatedBot(BotProcess):
    """`lorabot run --simulate --step-seconds 0.05` with the fake Discord's settings only."""

    async def start(self, *args: str) -> None:
        await super().start("--simulate", "--step-seconds", "0.05", *args)


async def test_run_simulate_trains_to_model_ready_and_says_so_on_the_card_and_the_dm(tmp_path: Path) -> None:
    fake, unused_sim = await open_fakes()
    await unused_sim.close()  # the process brings its own simulator
    bot = SimulatedBot(tmp_path, fake, "http://unused.invalid")
    for name in ("SDAPI_KEY", "SDAPI_BASE_URL", "PUBLIC_URL"):
        del bot.env[name]
    try:
        await started(bot, fake)
        job_id = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.state is JobState.MODEL_READY)

        card = fake.message(row.card_message_id)
        await fake.wait_for(lambda: "Model ready" in embed_text(card) or None, 10, "card edited to ready")
        assert f"Simulated: {SIMULATED_NOTE}" in embed_text(card)
        dms = await fake.wait_for(lambda: fake.dms_to(ALICE) or None, 30, "the DM")
        assert len(dms) == 1
        assert row.training_id in dms[0].content and SIMULATED_NOTE in dms[0].content

        # PUBLIC_URL defaulted to the local webhook server, so the simulator's webhooks came back.
        assert f"mode: webhooks to http://127.0.0.1:{bot.port}/webhooks/training" in bot.log
        async with httpx.AsyncClient(timeout=5) as client:
            health = (await client.get(f"http://127.0.0.1:{bot.port}/healthz")).json()
            assert health["mode"] == "webhooks"
            found = re.search(r"simulated: the built-in simulator at (http://127\.0\.0\.1:\d+)", bot.log)
            assert found, bot.log
            state = (await client.get(f"{found[1]}/_sim/state")).json()
        (training,) = state["trainings"]
        assert training["training_id"] == row.training_id
        assert training["webhook_url"].startswith(f"http://127.0.0.1:{bot.port}/webhooks/training/{job_id}/")
        assert any(hook.get("http_status") == 200 for hook in training["webhooks"]), training["webhooks"]
    finally:
        code = await bot.stop()
        await fake.close()
    assert code == 0, bot.log
    assert "stopped cleanly" in bot.log
