"""Reliability end to end: supervised background tasks, /forgetme with a preview open, and the
card showing the outcome before the owner's DM arrives.

The real bot (`Application`) against the fake Discord and the provider simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import discord
import httpx
import pytest

from bot.app import Application
from bot.jobs.states import JobState
from tests.e2e.harness import (
    ALICE,
    World,
    embed_text,
    job_id_of,
    make_settings,
    open_fakes,
    open_world,
    photos,
)


def errors_logged(caplog: pytest.LogCaptureFixture, *loggers: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in loggers and r.levelno >= logging.ERROR]


async def healthz(world: World) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{world.app.webhooks.port}/healthz")
    return response.status_code, response.json()


# -- supervised background tasks -------------------------------------------------------------------


async def test_a_killed_reconciler_pass_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that raises ends the reconciler's loop; the supervisor logs it and starts it again,
    and later passes still finish jobs whose webhooks were all lost."""
    caplog.set_level(logging.INFO)
    world, close = await open_world(tmp_path, reconcile_interval_seconds=10)
    try:
        reconciler = world.app.reconciler
        # Poll often from the next pass on (the settings' minimum interval is 10 s).
        reconciler.period = 0.2
        reconciler.interval = timedelta(seconds=1)
        real_run_once = reconciler.run_once
        broken: list[bool] = []

        async def run_once_broken_once(*, everything: bool = False) -> int:
            if not broken:
                broken.append(everything)
                raise sqlite3.OperationalError("database is locked (test)")
            return await real_run_once(everything=everything)

        monkeypatch.setattr(reconciler, "run_once", run_once_broken_once)
        world.sim.simulator.set_faults(drop_webhooks=True)

        stranded = await world.start_training()
        await world.wait_state(stranded.id, JobState.MODEL_READY, timeout=30)
        assert len(broken) == 1  # one pass died, and the reconciler came back
        training = world.sim.simulator.trainings[stranded.training_id]
        assert not any(d.delivered for d in training.deliveries)  # no webhook arrived
        health = world.app.supervisor.health()["reconciler"]
        assert health["restarts"] == 1 and health["last_error"] == "OperationalError", health
        assert health["healthy"] and health["state"] == "running", health
        died = [r for r in errors_logged(caplog, "bot.supervisor") if "reconciler" in r.getMessage()]
        assert len(died) == 1 and died[0].exc_info is not None
        assert died[0].exc_info[0] is sqlite3.OperationalError

        # Later passes still finish a job whose webhooks were all dropped.
        later = await world.start_training(name="after the restart")
        await world.wait_state(later.id, JobState.MODEL_READY, timeout=30)

        status, body = await healthz(world)
        assert status == 200, body
        assert {"discord", "notifier", "reconciler"} <= set(body["tasks"])
        assert body["tasks"]["reconciler"]["restarts"] == 1
        assert body["tasks"]["reconciler"]["healthy"] is True
    finally:
        await close()


async def test_a_rejected_token_stops_the_bot_and_is_not_restarted(tmp_path: Path) -> None:
    fake, sim = await open_fakes()
    app = Application(make_settings(tmp_path, fake, sim.url, discord_token="rejected-token-0123456789abcdef"))
    try:
        await app.start()
        await asyncio.wait_for(app.stop_event.wait(), 10)  # the process exits instead of retrying
        await asyncio.sleep(0.2)
        assert app.supervisor.health() == {
            "discord": {
                "healthy": True,
                "state": "stopped",
                "restarts": 0,
                "failures": 0,
                "last_error": None,
                "last_error_at": None,
            }
        }  # and the workers were never started
        logins = [r for r in fake.requests if r.route == "/users/@me"]
        assert len(logins) == 1
    finally:
        await app.stop()
        await sim.close()
        await fake.close()
        discord.http.Route.BASE = "https://discord.com/api/v10"


# -- /forgetme with a preview open -----------------------------------------------------------------


async def forget(world: World, user_id: int = ALICE) -> None:
    confirm = await (await world.command("forgetme", user_id)).wait_original()
    click = await world.click(confirm, f"lorabot:forget:yes:{user_id}:0", user_id)
    await click.wait_original(lambda m: m.content.startswith("Done"))


async def test_start_on_a_forgotten_preview_says_it_is_no_longer_active(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cleared_rec, cleared_preview = await world.preview(photos(5))
    rec, preview = await world.preview(photos(5, seed=7))
    job_ids = [job_id_of(cleared_preview), job_id_of(preview)]
    cog = world.app.bot.get_cog("Training")
    assert set(job_ids) <= set(cog.previews)  # type: ignore[attr-defined]
    # Clearing this one's message will fail (its token no longer works), so its buttons stay.
    rec.token_expired = True

    await forget(world)
    for job_id in job_ids:
        assert job_id not in cog.previews  # type: ignore[attr-defined]  # the crops are the user's photos
        assert await world.store.get_job(job_id) is None
    # The other preview message no longer shows the photos, nor buttons to press.
    cleared = await cleared_rec.wait_original(lambda m: "no longer active" in m.content)
    assert cleared.attachments == [] and cleared.components == [] and cleared.embeds == []

    job_id = job_ids[1]
    assert world.fake.message(preview.id).components  # still there: Start can be pressed
    click = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await click.wait_callback()
    assert "no longer active" in click.callback_data.get("content", ""), click.callback_data
    assert world.sim.simulator.trainings == {}
    assert errors_logged(caplog, "cogs.errors", "bot.supervisor") == []


async def test_buttons_and_the_timer_of_a_preview_whose_job_was_deleted_under_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The job row goes while the preview is still held in memory (no listener ran, e.g. a
    deletion racing the click): Start and Cancel answer in place, the timer just drops it."""
    caplog.set_level(logging.INFO)
    cog = world.app.bot.get_cog("Training")
    for action in ("start", "drop"):
        _, preview = await world.preview(photos(5))
        job_id = job_id_of(preview)
        await world.store.forget_user(ALICE)  # the store only: the cog is not told
        assert job_id in cog.previews  # type: ignore[attr-defined]
        click = await world.click(preview, f"lorabot:preview:{action}:{job_id}")
        await click.wait_callback()
        assert "no longer active" in click.callback_data.get("content", ""), click.callback_data
        assert job_id not in cog.previews  # type: ignore[attr-defined]

    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    await world.store.forget_user(ALICE)
    pending = cog.previews[job_id]  # type: ignore[attr-defined]
    pending.timer.cancel()
    pending.expires_at = pending.expires_at - timedelta(days=1)
    await cog._expire_later(pending)  # type: ignore[attr-defined]  # must not raise JobNotFound
    assert job_id not in cog.previews  # type: ignore[attr-defined]

    assert world.sim.simulator.trainings == {}
    assert errors_logged(caplog, "cogs.errors", "bot.supervisor") == []


# -- the card before the DM ------------------------------------------------------------------------


async def test_the_card_shows_ready_before_the_ready_dm_is_sent(tmp_path: Path) -> None:
    """Card edits are coalesced (here: one per 30 s), but the outcome is never shown late."""
    world, close = await open_world(tmp_path, card_edit_interval_seconds=30)
    try:
        job = await world.start_training()
        ready = await world.wait_for(
            lambda: [t for t in world.dm_texts(ALICE) if "is ready" in t] or None, timeout=30, what="the ready DM"
        )
        job = await world.store.require_job(job.id)
        assert job.state is JobState.MODEL_READY
        assert "Model ready" in embed_text(world.card(job)), "the DM arrived before the card showed the outcome"
        assert len(ready) == 1

        requests = world.fake.requests
        card_edit = next(
            i
            for i, r in enumerate(requests)
            if r.matches("PATCH", "/channels/{channel_id}/messages/{message_id}")
            and r.params.get("message_id") == str(job.card_message_id)
            and "Model ready" in json.dumps(r.json)
        )
        dm_post = next(
            i
            for i, r in enumerate(requests)
            if r.matches("POST", "/channels/{channel_id}/messages") and "is ready" in json.dumps(r.json)
        )
        assert card_edit < dm_post
    finally:
        await close()
