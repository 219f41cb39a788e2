"""Polling mode: without PUBLIC_URL the bot asks for no webhook and polls each active job every
POLL_INTERVAL_SECONDS; the card and the DM are the same as with webhooks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx

from bot.jobs.states import EventSource, JobState
from tests.e2e.harness import ALICE, embed_text, open_world


async def test_without_public_url_the_real_loop_polls_at_the_interval_to_model_ready(tmp_path: Path) -> None:
    world, close = await open_world(tmp_path, public_url=None, poll_interval_seconds=5)
    try:
        assert world.settings.mode == "polling"
        reconciler = world.app.reconciler
        assert reconciler.spread and reconciler.interval == timedelta(seconds=5)
        async with httpx.AsyncClient(timeout=5) as client:
            health = await client.get(f"http://127.0.0.1:{world.settings.webhook_port}/healthz")
        assert health.json()["mode"] == "polling"  # the webhook server still runs, for /healthz

        accepted = await world.start_training()
        training = world.sim.simulator.trainings[accepted.training_id]
        assert "webhook" in training.request and training.request["webhook"] is None  # sent as JSON null
        assert training.webhook_url is None
        # The simulator finishes within a second, but nothing tells the bot: it learns it from
        # its own poll, one interval after the job's last update.
        await world.sim.simulator.wait_for_status(accepted.training_id, "model_ready")
        job = await world.wait_state(accepted.id, JobState.MODEL_READY, timeout=20)

        polls = [
            r
            for r in world.sim.simulator.requests
            if r.endpoint == "fine_tune_status" and r.training_id == job.training_id
        ]
        assert len(polls) == 1, polls
        assert polls[0].at >= accepted.updated_at.timestamp() + 5, "polled before its interval was up"
        assert polls[0].at <= accepted.updated_at.timestamp() + 5 + reconciler.period + 2
        ready = [e for e in await world.store.events_for_job(job.id) if e.status == "model_ready"]
        assert [e.source for e in ready] == [EventSource.POLL]
        assert training.deliveries == []  # no webhook was ever sent

        # The card and the DM, exactly as with webhooks.
        await world.wait_for(lambda: "Model ready" in embed_text(world.card(job)), what="card at Model ready")
        await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")
        await world.app.notifier.deliver_due()
        dms = world.dm_texts(ALICE)
        assert len(dms) == 1, dms
        assert "is ready" in dms[0] and job.training_id in dms[0]
        assert "simulated" not in dms[0].lower() and "Simulated" not in embed_text(world.card(job))
    finally:
        await close()
