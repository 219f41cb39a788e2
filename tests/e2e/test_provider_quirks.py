"""The provider's ambiguous answers, end to end: the bot (its real wiring, a fake Discord on
loopback) against the simulator over HTTP, with each quirk the provider's pages allow switched on.

None of these may fail or lose a paid training, or create one twice."""

from __future__ import annotations

import httpx
import pytest

from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, World, embed_text, job_id_of, photos


async def press_start(world: World, **options: object) -> tuple[int, object]:
    """/train then Start; returns the job id and the Start click's interaction record."""
    _, preview = await world.preview(photos(5), **options)
    job_id = job_id_of(preview)
    click = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await click.wait_callback()
    return job_id, click


def submissions(world: World) -> list[object]:
    return [r for r in world.sim.simulator.requests if r.endpoint == "lora_fine_tune"]


async def poll_until(world: World, job_id: int, state: JobState, passes: int = 6) -> None:
    """Run reconciler passes (as the timer would) until the job reaches `state`."""
    for _ in range(passes):
        await world.app.reconciler.run_once(everything=True)
        job = await world.app.store.require_job(job_id)
        if job.state is state:
            return
        assert not job.state.is_terminal, f"job ended {job.state} ({job.last_error})"
    raise AssertionError(f"job {job_id} did not reach {state}")


# -- "not found" is a failed call, never a failed training --------------------------------------


@pytest.mark.parametrize("shape", ["json", "html", "json_200"])
async def test_a_transient_not_found_never_fails_a_job_that_then_becomes_ready(world: World, shape: str) -> None:
    world.sim.simulator.set_faults(drop_webhooks=True)
    job = await world.start_training()
    await world.sim.simulator.wait_until_settled(job.training_id)  # done at the provider; we heard nothing
    world.sim.simulator.set_faults(status_not_found=2, status_not_found_shape=shape)

    for _ in range(2):
        await world.app.reconciler.run_once(everything=True)
        after = await world.app.store.require_job(job.id)
        assert after.state is JobState.DEPLOYING_GPU and after.last_error is None
    await poll_until(world, job.id, JobState.MODEL_READY)
    texts = await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the ready DM")
    assert len(texts) == 1 and "is ready" in texts[0]
    # And the genuine webhook that may still come is accepted, not refused.
    statuses = [r.http_status for r in world.sim.simulator.requests if r.endpoint == "fine_tune_status"]
    assert statuses.count(404 if shape != "json_200" else 200) >= 2


# -- a full queue is waited out; the duplicate filter is never tripped ------------------------------


@pytest.mark.parametrize("http_codes", [True, False])
async def test_a_full_queue_is_retried_after_retry_after_and_the_training_created_once(
    world: World, http_codes: bool
) -> None:
    world.sim.simulator.set_faults(
        fail_submission=2,
        fail_submission_kind="queue_full",
        queue_retry_after=1,
        error_http_status=http_codes,
        duplicate_window_seconds=30,  # the provider's spam filter is on: retries must not look like repeats
    )
    job_id, click = await press_start(world)
    busy = await click.wait_original(lambda m: "queue is full" in m.content, timeout=20)
    assert "nothing has been charged" in busy.content.lower() or "not charged" in busy.content.lower()
    final = await click.wait_original(lambda m: "Training submitted" in m.content, timeout=30)
    assert "Training submitted" in final.content
    job = await world.wait_state(job_id, JobState.MODEL_READY, timeout=30)
    assert len(world.sim.simulator.trainings) == 1 and job.training_id in world.sim.simulator.trainings
    outcomes = [r.outcome or "" for r in submissions(world)]
    assert len(outcomes) == 3 and all("queued requests" in o for o in outcomes[:2]), outcomes
    assert not any("duplicate" in o for o in outcomes)
    at = [r.at for r in submissions(world)]
    assert at[1] - at[0] >= 0.9 and at[2] - at[1] >= 0.9  # waited retry_after each time


async def test_the_duplicate_filter_on_a_submission_leaves_it_uncertain_and_never_resent(world: World) -> None:
    world.sim.simulator.set_faults(fail_submission=1, fail_submission_kind="spam_filter")
    job_id, click = await press_start(world)
    reply = await click.wait_original(lambda m: "Submitting" not in m.content, timeout=20)
    assert "didn't confirm" in reply.content
    job = await world.wait_state(job_id, JobState.UNCERTAIN)
    assert job.training_id is None and len(submissions(world)) == 1


# -- a failure only polling reveals --------------------------------------------------------------


@pytest.mark.parametrize("shape", ["messege_failed", "status_failed", "status_error"])
async def test_a_failure_only_polling_reveals_fails_the_job_in_one_pass_with_the_reason(
    world: World, shape: str
) -> None:
    reason = "Training failed: the dataset could not be read."
    world.sim.simulator.set_faults(
        fail_training=1,
        fail_training_at="training_success",
        fail_training_reason=reason,
        failure_webhook=False,
        failure_status_shape=shape,
    )
    job = await world.start_training()
    await world.sim.simulator.wait_until_settled(job.training_id)
    assert (await world.app.store.require_job(job.id)).state is not JobState.FAILED  # no webhook told us

    await world.app.reconciler.run_once(everything=True)  # one pass
    after = await world.app.store.require_job(job.id)
    assert after.state is JobState.FAILED and after.last_error == reason
    texts = await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the failure DM")
    assert len(texts) == 1 and "failed" in texts[0] and reason in texts[0]
    await world.wait_for(lambda: "Failed" in embed_text(world.card(after)) or None, what="card shows the failure")


# -- "woman" has two spellings ---------------------------------------------------------------------


@pytest.mark.parametrize("accepted", ["female", "women"])
@pytest.mark.parametrize("error_shape", ["object", "string"])
async def test_a_womans_training_is_created_once_whichever_spelling_the_provider_accepts(
    world: World, accepted: str, error_shape: str
) -> None:
    world.sim.simulator.set_faults(woman_spelling=accepted, validation_error_shape=error_shape)
    job = await world.start_training(training_type="woman")
    assert job.training_id is not None, job.last_error
    await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    assert len(world.sim.simulator.trainings) == 1
    training = world.sim.simulator.trainings[job.training_id]
    assert training.request["training_type"] == accepted
    expected_attempts = 1 if accepted == "female" else 2
    assert len(submissions(world)) == expected_attempts

    # The spelling that worked is remembered: the next woman's training is right the first time.
    second = await world.start_training(training_type="woman")
    assert second.training_id is not None
    assert len(submissions(world)) == expected_attempts + 1
    assert len(world.sim.simulator.trainings) == 2


# -- the create answer's word --------------------------------------------------------------------


async def test_an_unknown_word_in_the_create_answer_is_an_accepted_training(world: World) -> None:
    world.sim.simulator.set_faults(create_status_word="queued")
    job = await world.start_training()
    assert job.training_id is not None and job.state is not JobState.SUBMITTING
    await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    assert len(world.sim.simulator.trainings) == 1


# -- unconfirmed submissions are settled from the account's model list ---------------------------


async def test_an_unconfirmed_submission_whose_webhooks_are_lost_is_adopted_from_the_model_list(
    world: World,
) -> None:
    from bot.provider.client import ProviderClient

    world.sim.simulator.set_faults(timeout_submission=1, hold_seconds=30, drop_webhooks=True)
    fast = ProviderClient(
        world.settings.sdapi_base_url, world.settings.sdapi_key.get_secret_value(), submit_timeout=0.3
    )
    real = world.app.service.provider
    world.app.service.provider = fast
    try:
        job_id, click = await press_start(world)
        await click.wait_original(lambda m: "didn't confirm" in m.content, timeout=20)
        job = await world.wait_state(job_id, JobState.UNCERTAIN)
        assert job.baseline_listing is not None
        (training_id,) = world.sim.simulator.trainings
        await world.sim.simulator.wait_until_settled(training_id)
        await poll_until(world, job_id, JobState.MODEL_READY)
    finally:
        world.app.service.provider = real
        await fast.aclose()
    after = await world.app.store.require_job(job_id)
    assert after.training_id == training_id
    assert len(submissions(world)) == 1, "never resent"
    texts = await world.wait_for(lambda: len(world.dm_texts(ALICE)) >= 2 and world.dm_texts(ALICE), what="DMs")
    assert any("did not confirm" in t for t in texts) and any("is ready" in t for t in texts)


# -- authentic late webhooks ----------------------------------------------------------------------


async def test_authentic_late_and_duplicate_webhooks_get_2xx_and_change_nothing(world: World) -> None:
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    training = world.sim.simulator.trainings[job.training_id]
    await world.sim.simulator.wait_until_settled(job.training_id)
    events = await world.app.store.events_for_job(job.id)
    async with httpx.AsyncClient() as client:
        for delivery in training.deliveries[:3] + training.deliveries[-1:]:  # early ones, and the last again
            response = await client.post(training.webhook_url, json=delivery.body)
            assert response.status_code == 200, response.text
        wrong = await client.post(training.webhook_url, json={**training.deliveries[0].body, "model_id": "SOMEONEELS"})
        assert wrong.status_code == 409
    assert await world.app.store.events_for_job(job.id) == events
    assert (await world.app.store.require_job(job.id)).updated_at == job.updated_at


# -- a provider that moved -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [307, 308])
async def test_a_provider_that_moved_with_307_or_308_is_followed(world: World, code: int) -> None:
    world.sim.simulator.set_faults(redirect_status=code)
    job = await world.start_training()
    assert job.training_id is not None
    await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    assert len(world.sim.simulator.trainings) == 1
    assert world.app.provider.api_root.endswith("/relocated/api/v3")
