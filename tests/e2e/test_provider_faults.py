"""The provider misbehaving, seen from Discord: refusals, an unconfirmed submission, lost
webhooks, an unknown status word; and the per-user limits that protect the owner's wallet."""

from __future__ import annotations

import pytest

from bot.jobs.states import JobState
from bot.provider.client import ProviderClient
from tests.e2e.harness import ALICE, API_KEY, GUILD, MANAGER, World, embed_text, job_id_of, photos


async def start_and_read_reply(world: World) -> tuple[int, str]:
    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    click = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await click.wait_callback()
    final = await click.wait_original(lambda m: "Submitting" not in m.content, timeout=20)
    return job_id, final.content


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("failed", "Failed, Try Again"), ("invalid_key", "API key"), ("insufficient_credits", "credits")],
)
async def test_a_refused_submission_fails_the_job_and_says_why(world: World, kind: str, expected: str) -> None:
    world.sim.simulator.set_faults(fail_submission=1, fail_submission_kind=kind)
    job_id, reply = await start_and_read_reply(world)
    job = await world.wait_state(job_id, JobState.FAILED)
    assert expected.lower() in reply.lower(), reply
    assert expected.lower() in (job.last_error or "").lower()
    assert world.sim.simulator.trainings == {}
    await world.wait_for(lambda: "Failed" in embed_text(world.card(job)), what="card shows the failure")


async def test_an_unconfirmed_submission_is_never_resent_and_is_adopted_by_its_webhooks(world: World) -> None:
    # The provider starts the training but its answer never comes, and its first webhook is lost.
    world.sim.simulator.set_faults(timeout_submission=1, hold_seconds=30, drop_webhooks=["deploying_gpu"])
    world.sim.simulator.step_seconds = 0.6
    fast = ProviderClient(world.settings.sdapi_base_url, API_KEY, submit_timeout=0.3)
    world.app.service.provider = fast
    try:
        job_id, reply = await start_and_read_reply(world)
        assert "didn't confirm" in reply
        job = await world.wait_state(job_id, JobState.MODEL_READY, timeout=30)
        assert len(world.sim.simulator.trainings) == 1
        assert job.training_id in world.sim.simulator.trainings
        texts = await world.wait_for(lambda: len(world.dm_texts(ALICE)) >= 2 and world.dm_texts(ALICE), what="DMs")
        assert any("did not confirm" in t for t in texts) and any("is ready" in t for t in texts)
    finally:
        await fast.aclose()


async def test_lost_webhooks_are_recovered_by_polling(world: World) -> None:
    world.sim.simulator.set_faults(drop_webhooks=True)
    job = await world.start_training()
    await world.sim.simulator.wait_until_settled(job.training_id)
    assert (await world.app.store.get_job(job.id)).state is not JobState.MODEL_READY
    await world.app.reconciler.run_once(everything=True)
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    events = await world.app.store.events_for_job(job.id)
    assert events[-1].source.value == "poll"


async def test_an_unknown_status_word_is_shown_as_is(world: World) -> None:
    world.sim.simulator.set_faults(unknown_status_word="queued_for_gpu", unknown_status_after="deploying_gpu")
    world.sim.simulator.step_seconds = 0.3
    job = await world.start_training()
    await world.wait_job(job.id, lambda j: j.provider_status == "queued_for_gpu")
    await world.wait_for(lambda: "queued_for_gpu" in embed_text(world.card(job)), what="card shows the word")
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    assert "queued_for_gpu" in [e.status for e in await world.app.store.events_for_job(job.id)]


async def test_a_second_training_while_one_runs_is_refused_with_a_clear_message(world: World) -> None:
    await world.app.server_settings.change(GUILD, MANAGER, {"max_active_jobs_per_user": 1})
    world.sim.simulator.step_seconds = 5
    _, waiting = await world.preview(photos(5))  # a second preview, opened while nothing runs yet
    await world.start_training()
    rec = await world.train(photos(5))
    message = await rec.wait_original(lambda m: bool(m.content), timeout=20)
    assert "already have 1 training" in message.content
    assert message.flags & 64 or rec.ephemeral
    # Pressing Start on the earlier preview is refused in place, and the preview is dropped.
    job_id = job_id_of(waiting)
    click = await world.click(waiting, f"lorabot:preview:start:{job_id}")
    refused = await click.wait_original(lambda m: "already have 1 training" in m.content, timeout=20)
    assert not refused.components
    assert (await world.app.store.get_job(job_id)).state is JobState.EXPIRED
