"""The provider client against the provider simulator, over real loopback HTTP.

Every fault switch of the simulator is exercised through `bot.provider.client.ProviderClient`.
Nothing leaves 127.0.0.1 (a guard fixture refuses to resolve any other name).
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.jobs.provider_errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.jobs.training_api import TrainingRequest, TrainingStatus
from bot.provider.client import ProviderClient
from bot.simulator import STATUSES, start_simulator
from bot.simulator.testing import ImageHost
from tests.provider.simulated import STEP

KEY = "client-test-key-9a8b7c"


class Sleeps:
    """Stands in for asyncio.sleep in the client: records backoff waits, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def running():
    """This suite's simulator accepts only KEY (the folder's default accepts any key)."""
    async with await start_simulator(step_seconds=STEP, api_key=KEY) as sim:
        yield sim


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(running, sleeps):
    async with ProviderClient(
        running.url,
        KEY,
        timeout=2.0,
        submit_timeout=5.0,
        max_attempts=4,
        backoff_base=0.01,
        sleep=sleeps,
        duplicate_window=0,  # these tests watch the walk call by call
    ) as provider:
        yield provider


def training_request(host: ImageHost, *, webhook: str | None = None, count: int = 3, **fields: Any) -> TrainingRequest:
    urls = tuple(host.add_png(f"{i}.png", query=f"ex=66&is=65&hm=f{i}&") for i in range(1, count + 1))
    return TrainingRequest(
        instance_prompt="photo of ambika0 man",
        class_prompt="photo of a man",
        images=urls,
        webhook=webhook,
        **fields,
    )


def endpoints(running) -> list[str]:
    return [r.endpoint for r in running.simulator.requests]


# -- the happy path -----------------------------------------------------------------------------


async def test_submit_then_webhooks_then_status_model_ready(running, host, hooks, client):
    request = training_request(host, webhook=hooks.url, count=4, max_train_steps=8)

    result = await client.submit_training(request)

    assert len(result.training_id) == 10 and result.training_id.isalnum()
    assert result.status == "deploying_gpu"
    assert result.eta_text == "it will take upto 30 minutes."
    bodies = await hooks.wait_for(8)
    assert [b["training_status"] for b in bodies] == list(STATUSES)
    # The client's own parser understands every webhook body the simulator sends.
    assert [TrainingStatus.from_payload(b).status for b in bodies] == list(STATUSES)
    assert {b["model_id"] for b in bodies} == {result.training_id}

    status = await client.training_status(result.training_id)
    assert status.status == "model_ready"
    assert status.log_lines[-1] == "Model loaded successfully"
    assert status.eta == "5 minutes"

    training = running.simulator.trainings[result.training_id]
    # The client sends the documented shapes: numbers as strings, nothing tolerated.
    assert training.warnings == []
    assert training.request["max_train_steps"] == "8"
    assert training.request["seed"] == "0"
    assert training.request["training_type"] == "men"
    assert [(i.width, i.height, i.format) for i in training.images] == [(512, 512, "PNG")] * 4
    assert [i.url for i in training.images] == list(request.images)
    assert endpoints(running) == ["lora_fine_tune", "fine_tune_status"]


async def test_status_while_walking(running, host, client):
    running.simulator.step_seconds = 60
    result = await client.submit_training(training_request(host, count=1))
    await running.simulator.wait_for_status(result.training_id, "deploying_gpu")
    assert (await client.training_status(result.training_id)).status == "deploying_gpu"
    running.simulator.advance(result.training_id)
    await running.simulator.wait_for_status(result.training_id, "training_started")
    status = await client.training_status(result.training_id)
    assert status.status == "training_started"
    assert status.eta == "30 minutes"


# -- submission faults --------------------------------------------------------------------------


@pytest.mark.parametrize("http_codes", [False, True])
async def test_fail_submission_is_request_rejected_with_the_message(running, host, client, http_codes):
    running.simulator.set_faults(fail_submission=1, error_http_status=http_codes)
    with pytest.raises(RequestRejected) as caught:
        await client.submit_training(training_request(host, count=1))
    assert caught.value.provider_message == "Failed, Try Again"
    assert "Failed, Try Again" in caught.value.user_message
    assert endpoints(running) == ["lora_fine_tune"]  # never retried
    assert running.simulator.trainings == {}


async def test_fail_submission_with_a_custom_error_message(running, host, client):
    running.simulator.set_faults(fail_submission=1, fail_submission_kind="error", fail_submission_message="No GPUs")
    with pytest.raises(RequestRejected) as caught:
        await client.submit_training(training_request(host, count=1))
    assert caught.value.provider_message == "No GPUs"


@pytest.mark.parametrize("http_codes", [False, True])
async def test_invalid_key(running, host, http_codes):
    running.simulator.set_faults(error_http_status=http_codes)
    async with ProviderClient(running.url, "not-the-key", timeout=2.0) as wrong:
        with pytest.raises(InvalidApiKey) as caught:
            await wrong.submit_training(training_request(host, count=1))
        assert caught.value.status_code == (401 if http_codes else 200)
        with pytest.raises(InvalidApiKey):
            await wrong.list_trainings()
    assert running.simulator.trainings == {}


async def test_invalid_key_fault(running, host, client):
    running.simulator.set_faults(fail_submission=1, fail_submission_kind="invalid_key")
    with pytest.raises(InvalidApiKey):
        await client.submit_training(training_request(host, count=1))


@pytest.mark.parametrize("http_codes", [False, True])
async def test_insufficient_credits(running, host, client, http_codes):
    running.simulator.set_faults(
        fail_submission=1, fail_submission_kind="insufficient_credits", error_http_status=http_codes
    )
    with pytest.raises(InsufficientCredits) as caught:
        await client.submit_training(training_request(host, count=1))
    assert caught.value.provider_message == "Insufficient credits. Please add more credits to continue."
    assert caught.value.status_code == (402 if http_codes else 200)


@pytest.mark.parametrize("http_codes", [False, True])
async def test_rate_limited(running, host, client, http_codes):
    running.simulator.set_faults(fail_submission=1, fail_submission_kind="rate_limited", error_http_status=http_codes)
    with pytest.raises(RateLimited) as caught:
        await client.submit_training(training_request(host, count=1))
    assert caught.value.retry_after == 30
    assert caught.value.status_code == (429 if http_codes else 200)
    assert endpoints(running) == ["lora_fine_tune"]


async def test_timeout_submission_is_uncertain_and_the_training_exists(running, host, hooks, sleeps):
    running.simulator.set_faults(timeout_submission=1, hold_seconds=3)
    async with ProviderClient(running.url, KEY, submit_timeout=0.5, timeout=2.0, sleep=sleeps) as impatient:
        with pytest.raises(SubmissionUncertain):
            await impatient.submit_training(training_request(host, webhook=hooks.url, count=1))

        # The request reached the provider: the training exists and walks, so it must never be
        # submitted again; it can be found by listing or by its webhooks.
        assert endpoints(running) == ["lora_fine_tune"]
        [training] = running.simulator.trainings.values()
        assert training.submission_held
        assert await impatient.list_trainings() == [training.training_id]
        bodies = await hooks.wait_for(8)
        assert {b["model_id"] for b in bodies} == {training.training_id}
        assert (await impatient.training_status(training.training_id)).status == "model_ready"
    assert endpoints(running).count("lora_fine_tune") == 1


async def test_validation_and_image_errors_are_rejections(running, host, client):
    with pytest.raises(RequestRejected) as caught:
        await client.submit_training(training_request(host, count=1, training_type="robot"))
    assert "training_type" in (caught.value.provider_message or "")

    bad = TrainingRequest("photo of x man", "photo of a man", (host.add_png("1.png"), host.missing_url()))
    with pytest.raises(RequestRejected) as caught:
        await client.submit_training(bad)
    assert caught.value.provider_message == "Image 2 could not be downloaded: HTTP 404"
    assert running.simulator.trainings == {}


# -- status faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "503", "502"])
async def test_status_errors_are_retried_until_success(running, host, client, sleeps, mode):
    result = await client.submit_training(training_request(host, count=1))
    running.simulator.set_faults(status_errors=2, status_error_mode=mode)

    status = await client.training_status(result.training_id)

    assert status.status in STATUSES
    codes = [r.http_status for r in running.simulator.requests if r.endpoint == "fine_tune_status"]
    assert codes == [int(mode), int(mode), 200]
    assert len(sleeps.waits) == 2


async def test_status_hang_is_retried(running, host, sleeps):
    async with ProviderClient(running.url, KEY, timeout=0.3, max_attempts=3, sleep=sleeps) as quick:
        result = await quick.submit_training(training_request(host, count=1))
        running.simulator.set_faults(status_errors=1, status_error_mode="hang", status_hang_seconds=1.5)
        status = await quick.training_status(result.training_id)
    assert status.status in STATUSES
    assert len(sleeps.waits) == 1


async def test_status_errors_past_the_attempt_budget(running, host, client):
    result = await client.submit_training(training_request(host, count=1))
    running.simulator.set_faults(status_errors=10, status_error_mode="503")
    with pytest.raises(ProviderUnavailable) as caught:
        await client.training_status(result.training_id)
    assert caught.value.status_code == 503
    assert endpoints(running).count("fine_tune_status") == 4


async def test_unknown_status_word_passes_through(running, host, hooks, client):
    running.simulator.step_seconds = 60
    running.simulator.set_faults(unknown_status_word="queued_for_gpu")
    result = await client.submit_training(training_request(host, webhook=hooks.url, count=1))
    running.simulator.advance(result.training_id)
    await running.simulator.wait_for_status(result.training_id, "queued_for_gpu")

    assert (await client.training_status(result.training_id)).status == "queued_for_gpu"
    bodies = await hooks.wait_for(2)
    assert TrainingStatus.from_payload(bodies[1]).status == "queued_for_gpu"


async def test_failed_training_reads_failed_with_the_reason(running, host, hooks, client):
    running.simulator.set_faults(fail_training=1, fail_training_at="training_started", fail_training_reason="OOM")
    result = await client.submit_training(training_request(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(result.training_id)

    status = await client.training_status(result.training_id)
    assert status.status == "failed"
    assert status.log_lines == ("OOM",)
    assert [TrainingStatus.from_payload(b).status for b in hooks.bodies] == ["deploying_gpu", "failed"]


# -- webhook faults (the client only submits; the simulator's deliveries are checked) ----------


async def test_webhook_faults_with_a_client_submission(running, host, hooks, client):
    running.simulator.set_faults(drop_webhooks={"training_started"}, duplicate_webhooks=2, reorder_webhooks="reverse")
    result = await client.submit_training(training_request(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(result.training_id)
    expected = [s for s in reversed(STATUSES) if s != "training_started"]
    assert hooks.statuses == [s for s in expected for _ in range(2)]
    assert (await client.training_status(result.training_id)).status == "model_ready"


# -- cancel, list, delete, crop -----------------------------------------------------------------


async def test_cancel_uses_the_documented_cancle_path(running, host, hooks, client):
    running.simulator.step_seconds = 60
    result = await client.submit_training(training_request(host, webhook=hooks.url, count=1))
    await hooks.wait_for(1)

    text = await client.cancel_training(result.training_id)

    assert text == "Training cancelled successfully"
    [cancel] = [r for r in running.simulator.requests if r.endpoint == "cancel_training"]
    assert cancel.path == f"/api/v3/cancle_training/{result.training_id}"
    assert (await client.training_status(result.training_id)).status == "training_success"
    with pytest.raises(RequestRejected) as caught:
        await client.cancel_training(result.training_id)
    assert caught.value.provider_message == "Training has already finished."
    assert hooks.statuses == ["deploying_gpu"]


@pytest.mark.parametrize("http_codes", [False, True])
async def test_unknown_training_is_not_found(running, client, http_codes):
    running.simulator.set_faults(error_http_status=http_codes)
    with pytest.raises(TrainingNotFound):
        await client.training_status("NoSuchId00")
    with pytest.raises(TrainingNotFound):
        await client.cancel_training("NoSuchId00")
    with pytest.raises(TrainingNotFound):
        await client.delete_training("NoSuchId00")


async def test_list_and_delete(running, host, client):
    assert await client.list_trainings() == []
    first = (await client.submit_training(training_request(host, count=1))).training_id
    second = (await client.submit_training(training_request(host, count=1))).training_id
    assert await client.list_trainings() == [first, second]

    assert await client.delete_training(first) == "Model deleted successfully"

    assert await client.list_trainings() == [second]
    with pytest.raises(TrainingNotFound):
        await client.training_status(first)
