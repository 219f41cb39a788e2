"""ProviderClient against scripted httpx.MockTransport answers: every documented shape and failure."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from bot.jobs.provider_errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.jobs.training_api import SubmitResult, TrainingRequest
from bot.provider.client import ProviderClient
from tests.provider.scripted import BASE, KEY, MakeClient, Script, Sleeper, Step, ok

from .test_models import EXPECTED_LINES, LORA_PAGE_BODY, PAGE_IMAGES, STATUS_LOG_NEWLINES, STATUS_LOG_SLASH_N

TID = "F5jvdzGnYi"


def page_request(**overrides: Any) -> TrainingRequest:
    fields: dict[str, Any] = {
        "instance_prompt": "photo of ambika0 man",
        "class_prompt": "photo of a man",
        "images": PAGE_IMAGES,
        "max_train_steps": 2,
    }
    fields.update(overrides)
    return TrainingRequest(**fields)


SUBMIT_OK = {
    "status": "success",
    "messege": "deploying_gpu",
    "data": "it will take upto 30 minutes.",
    "training_id": TID,
}
STATUS_OK = {"status": "success", "messege": "model_ready", "data": STATUS_LOG_SLASH_N}


# =========================================================================== submit_training


async def test_submit_sends_the_documented_body_and_parses_the_answer(make: MakeClient) -> None:
    client, script = make(ok(SUBMIT_OK))
    result = await client.submit_training(page_request())

    assert result == SubmitResult(TID, "deploying_gpu", "it will take upto 30 minutes.", result.raw)
    (request,) = script.requests
    assert request.method == "POST"
    assert str(request.url) == "https://stablediffusionapi.com/api/v3/lora_fine_tune"
    assert request.headers["content-type"] == "application/json"
    expected = json.loads(LORA_PAGE_BODY)
    expected["key"] = KEY
    assert json.loads(request.content) == expected
    assert b'"webhook":null' in request.content.replace(b" ", b"")
    assert b'"max_train_steps":"2"' in request.content.replace(b" ", b"")
    # The key travels only in the body.
    assert KEY not in str(request.url)
    assert all(KEY not in value for value in request.headers.values())


async def test_submit_uses_the_submit_timeout_and_reads_use_the_normal_one(make: MakeClient) -> None:
    client, script = make(ok(SUBMIT_OK), ok(STATUS_OK), timeout=12.0, submit_timeout=75.0)
    await client.submit_training(page_request())
    await client.training_status(TID)
    submit_timeout, status_timeout = (request.extensions["timeout"] for request in script.requests)
    assert submit_timeout["read"] == 75.0 and submit_timeout["write"] == 75.0
    assert status_timeout["read"] == 12.0 and status_timeout["write"] == 12.0
    for timeout in (submit_timeout, status_timeout):
        assert set(timeout) == {"connect", "read", "write", "pool"}
        assert all(value is not None and value > 0 for value in timeout.values())


@pytest.mark.parametrize(
    ("payload", "expected_id", "expected_status"),
    [
        ({"status": "success", "message": "deploying_gpu", "model_id": "M0d3lId"}, "M0d3lId", "deploying_gpu"),
        ({"status": "success", "messege": "Deploying_GPU ", "id": 4242}, "4242", "deploying_gpu"),
    ],
)
async def test_submit_accepts_id_and_message_variants(
    make: MakeClient, payload: dict[str, Any], expected_id: str, expected_status: str
) -> None:
    client, _ = make(ok(payload))
    result = await client.submit_training(page_request())
    assert (result.training_id, result.status, result.eta_text) == (expected_id, expected_status, None)


async def test_submit_strips_an_echoed_key_from_raw(make: MakeClient) -> None:
    client, _ = make(ok({**SUBMIT_OK, "key": KEY, "meta": {"note": f"key was {KEY}"}}))
    result = await client.submit_training(page_request())
    assert "key" not in result.raw
    assert KEY not in json.dumps(dict(result.raw))
    assert result.raw["meta"] == {"note": "key was [redacted]"}


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.WriteTimeout("timed out"),
        httpx.ReadError("connection reset"),
        httpx.WriteError("broken pipe"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
    ],
)
async def test_submit_is_never_retried_after_it_may_have_been_sent(
    make: MakeClient, sleeper: Sleeper, exc: Exception
) -> None:
    client, script = make(exc, ok(SUBMIT_OK))
    with pytest.raises(SubmissionUncertain) as info:
        await client.submit_training(page_request())
    assert len(script.requests) == 1
    assert sleeper.delays == []
    assert info.value.__cause__ is exc


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("connection refused"), httpx.ConnectTimeout("timed out"), httpx.PoolTimeout("pool")],
)
async def test_submit_connect_failures_are_unavailable_not_uncertain(
    make: MakeClient, sleeper: Sleeper, exc: Exception
) -> None:
    client, script = make(exc, ok(SUBMIT_OK))
    with pytest.raises(ProviderUnavailable) as info:
        await client.submit_training(page_request())
    assert not isinstance(info.value, SubmissionUncertain)
    assert len(script.requests) == 1  # the caller decides whether to try again
    assert sleeper.delays == []


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(500), SubmissionUncertain),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), SubmissionUncertain),
        (httpx.Response(200, text="<html>maintenance</html>"), SubmissionUncertain),
        (httpx.Response(200, json=["not", "an", "object"]), SubmissionUncertain),
        (ok({"status": "success", "messege": "deploying_gpu", "data": "soon"}), SubmissionUncertain),
        (ok({"status": "error", "message": "Internal server error. Please try again."}, 500), ProviderUnavailable),
        (ok({"status": "error", "message": "Service unavailable"}, 503), ProviderUnavailable),
        (ok({"status": "error", "message": "upstream timed out"}, 504), SubmissionUncertain),
        (ok({"status": "error", "message": "bad gateway"}, 502), SubmissionUncertain),
    ],
)
async def test_submit_unusable_answers(
    make: MakeClient, sleeper: Sleeper, response: httpx.Response, expected: type[ProviderError]
) -> None:
    client, script = make(response, ok(SUBMIT_OK))
    with pytest.raises(expected) as info:
        await client.submit_training(page_request())
    assert type(info.value) is expected
    assert len(script.requests) == 1
    assert sleeper.delays == []


async def test_submit_rate_limit_is_raised_without_retry(make: MakeClient, sleeper: Sleeper) -> None:
    body = {"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests allowed.", "retry_after": 30}
    client, script = make(ok(body, 429), ok(SUBMIT_OK))
    with pytest.raises(RateLimited) as info:
        await client.submit_training(page_request())
    assert info.value.retry_after == 30
    assert info.value.status_code == 429
    assert len(script.requests) == 1
    assert sleeper.delays == []


@pytest.mark.parametrize(
    ("response", "expected", "provider_message"),
    [
        (
            ok({"status": "error", "message": "Invalid Api Key", "tip": "1. Make sure you ... valid API key."}),
            InvalidApiKey,
            "Invalid Api Key",
        ),
        (
            ok(
                {
                    "status": "error",
                    "message": "Rate limit exceeded",
                    "tips": "you are sending same request multiple times, spam filter is enabled, "
                    "please wait for 30 seconds and try again",
                }
            ),
            SubmissionUncertain,  # the duplicate filter: an identical request is already in
            "Rate limit exceeded",
        ),
        (ok({"status": "error", "message": "Rate limit exceeded"}), SubmissionUncertain, "Rate limit exceeded"),
        (ok({"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}), RequestRejected, None),
        (
            ok({"status": "error", "message": {"prompt": ["The prompt field is required."]}}),
            RequestRejected,
            "prompt: The prompt field is required.",
        ),
        (ok({"status": "error", "message": "Model id not found"}), RequestRejected, "Model id not found"),
        (
            ok({"status": "error", "messege": "Insufficient credits. Please add more credits to continue."}, 402),
            InsufficientCredits,
            None,
        ),
        (ok({"status": "error", "message": "each training cost $1. Fund your wallet"}), InsufficientCredits, None),
        (ok({"status": "error", "message": "prompt is required"}, 400), RequestRejected, "prompt is required"),
        (httpx.Response(401, text="Unauthorized"), InvalidApiKey, None),
        (httpx.Response(404, text="<html>Not Found</html>"), RequestRejected, None),
    ],
)
async def test_submit_error_bodies(
    make: MakeClient,
    response: httpx.Response,
    expected: type[ProviderError],
    provider_message: str | None,
) -> None:
    client, script = make(response)
    with pytest.raises(ProviderError) as info:
        await client.submit_training(page_request())
    assert type(info.value) is expected
    if provider_message is not None:
        assert info.value.provider_message == provider_message
    assert len(script.requests) == 1


async def test_spam_filter_tip_gives_30_seconds_and_names_the_duplicate_filter(make: MakeClient) -> None:
    tips = "spam filter is enabled, please wait for 30 seconds and try again"
    client, _ = make(ok({"status": "error", "message": "Rate limit exceeded", "tips": tips}))
    client._max_rate_limit_wait = 0  # raise instead of waiting
    with pytest.raises(RateLimited) as info:
        await client.list_trainings()
    assert info.value.retry_after == 30.0
    assert info.value.kind == "duplicate"
    assert not info.value.definitely_not_accepted


@pytest.mark.parametrize(
    ("response", "kind", "not_accepted"),
    [
        (
            ok({"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests allowed."}),
            "queue_full",
            True,
        ),
        (ok({"status": "error", "message": "Rate limit exceeded", "retry_after": 12}, 429), "unknown", True),
        (httpx.Response(429, headers={"Retry-After": "7"}), "unknown", True),
        (httpx.Response(429, text="Too Many Requests"), "unknown", False),
    ],
)
async def test_rate_limit_kinds(make: MakeClient, response: httpx.Response, kind: str, not_accepted: bool) -> None:
    client, _ = make(response)
    client._max_rate_limit_wait = 0
    with pytest.raises(RateLimited) as info:
        await client.list_trainings()
    assert info.value.kind == kind
    assert info.value.definitely_not_accepted is not_accepted


async def test_submit_queue_full_is_refused_but_an_unexplained_429_is_uncertain(make: MakeClient) -> None:
    client, _ = make(httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(429, text="busy"))
    with pytest.raises(RateLimited) as refused:
        await client.submit_training(page_request())
    assert refused.value.retry_after == 3
    with pytest.raises(SubmissionUncertain):
        await client.submit_training(page_request())


async def test_submit_failed_try_again_is_readable(make: MakeClient) -> None:
    client, _ = make(ok({"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}))
    with pytest.raises(RequestRejected) as info:
        await client.submit_training(page_request())
    assert not isinstance(info.value, TrainingNotFound)
    assert info.value.provider_message == "Failed, Try Again"
    assert "Failed, Try Again" in info.value.user_message


async def test_dict_message_becomes_readable_user_text(make: MakeClient) -> None:
    body = {"status": "error", "message": {"prompt": ["The prompt field is required."], "images": ["Too few."]}}
    client, _ = make(ok(body))
    with pytest.raises(RequestRejected) as info:
        await client.submit_training(page_request())
    assert info.value.user_message == (
        "The image service rejected the request: prompt: The prompt field is required.; images: Too few."
    )
    assert "{" not in str(info.value)


# =========================================================================== training_status


@pytest.mark.parametrize("log", [STATUS_LOG_SLASH_N, STATUS_LOG_NEWLINES])
async def test_status_parses_the_documented_answer(make: MakeClient, log: str) -> None:
    client, script = make(ok({"status": "success", "messege": "model_ready", "data": log, "key": KEY}))
    status = await client.training_status(TID)
    assert status.status == "model_ready"
    assert status.log_lines == EXPECTED_LINES
    assert status.eta == "5 minutes"
    assert "key" not in status.raw
    assert script.paths == [f"/api/v3/fine_tune_status/{TID}"]
    assert script.bodies == [{"key": KEY}]


async def test_status_with_message_key_in_progress(make: MakeClient) -> None:
    log = "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done, 4 Steps to go : ETA : 15 minutes /n "  # noqa: E501
    client, _ = make(ok({"status": "success", "message": "Training_Started", "data": log}))
    status = await client.training_status(TID)
    assert status.status == "training_started"
    assert status.eta == "15 minutes"
    assert status.log_lines[-1] == "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"


@pytest.mark.parametrize(
    ("response", "expected", "status_code"),
    [
        (ok({"status": "error", "message": "prompt is required"}, 400), RequestRejected, 400),
        (ok({"status": "error", "message": "Invalid API key"}, 401), InvalidApiKey, 401),
        (
            ok({"status": "error", "message": "Insufficient credits. Please add more credits to continue."}, 402),
            InsufficientCredits,
            402,
        ),
        (ok({"status": "error", "message": "This feature requires a premium subscription"}, 403), RequestRejected, 403),
        (ok({"status": "error", "messege": "Training ID does not exist", "code": 404}, 404), TrainingNotFound, 404),
        (httpx.Response(404), TrainingNotFound, 404),
        (ok({"status": "error", "messege": "Training ID does not exist"}), TrainingNotFound, 200),
        (ok({"status": "error", "message": "Model id not found"}), TrainingNotFound, 200),
        (ok({"status": "error", "message": "Invalid Api Key"}), InvalidApiKey, 200),
        (ok({"status": "error", "message": {"prompt": ["The prompt field is required."]}}), RequestRejected, 200),
    ],
)
async def test_status_client_errors_are_not_retried(
    make: MakeClient,
    sleeper: Sleeper,
    response: httpx.Response,
    expected: type[ProviderError],
    status_code: int,
) -> None:
    client, script = make(response, ok(STATUS_OK))
    with pytest.raises(ProviderError) as info:
        await client.training_status(TID)
    assert type(info.value) is expected
    assert info.value.status_code == status_code
    assert len(script.requests) == 1
    assert sleeper.delays == []


@pytest.mark.parametrize(
    "failure",
    [
        lambda: httpx.Response(500),
        lambda: ok({"status": "error", "message": "Internal server error. Please try again."}, 500),
        lambda: httpx.Response(503, text="Service Unavailable"),
        lambda: httpx.Response(200, text="<html>oops</html>"),
        lambda: httpx.ReadTimeout("timed out"),
        lambda: httpx.ConnectError("refused"),
        lambda: httpx.RemoteProtocolError("disconnected"),
    ],
)
async def test_read_only_calls_retry_then_give_up(
    make: MakeClient, sleeper: Sleeper, failure: Callable[[], Step]
) -> None:
    client, script = make(*(failure() for _ in range(4)))
    with pytest.raises(ProviderUnavailable):
        await client.training_status(TID)
    assert len(script.requests) == 4
    assert sleeper.delays == [0.5, 1.0, 2.0]  # exponential ceilings of the full jitter


async def test_retry_recovers_and_returns_the_answer(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(httpx.Response(503), httpx.ReadTimeout("slow"), ok(STATUS_OK))
    status = await client.training_status(TID)
    assert status.status == "model_ready"
    assert script.paths == [f"/api/v3/fine_tune_status/{TID}"] * 3
    assert len(sleeper.delays) == 2


async def test_backoff_is_capped_by_backoff_max(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(*(httpx.Response(502) for _ in range(5)), max_attempts=5, backoff_base=1.0, backoff_max=1.5)
    with pytest.raises(ProviderUnavailable):
        await client.training_status(TID)
    assert len(script.requests) == 5
    assert sleeper.delays == [1.0, 1.5, 1.5, 1.5]


async def test_backoff_is_jittered_within_bounds(make: MakeClient, sleeper: Sleeper) -> None:
    client, _ = make(*(httpx.Response(500) for _ in range(8)), max_attempts=8, rng=random.Random(1234), backoff_max=4.0)
    with pytest.raises(ProviderUnavailable):
        await client.training_status(TID)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert len(sleeper.delays) == 7
    assert all(0.0 <= delay <= ceiling for delay, ceiling in zip(sleeper.delays, ceilings, strict=True))
    assert any(delay < ceiling for delay, ceiling in zip(sleeper.delays, ceilings, strict=True))


async def test_max_attempts_one_means_no_retry(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(httpx.Response(500), max_attempts=1)
    with pytest.raises(ProviderUnavailable):
        await client.training_status(TID)
    assert len(script.requests) == 1 and sleeper.delays == []


async def test_json_that_is_not_an_object_is_unavailable_without_retry(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(ok(["model_ready"]))
    with pytest.raises(ProviderUnavailable) as info:
        await client.training_status(TID)
    assert info.value.retryable is False
    assert len(script.requests) == 1 and sleeper.delays == []


# --------------------------------------------------------------------------- 429 handling


async def test_429_waits_retry_after_from_body(make: MakeClient, sleeper: Sleeper) -> None:
    body = {"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests allowed.", "retry_after": 2}
    client, script = make(ok(body, 429), ok(STATUS_OK))
    assert (await client.training_status(TID)).status == "model_ready"
    assert sleeper.delays == [2.0]
    assert len(script.requests) == 2


async def test_429_waits_retry_after_header_seconds(make: MakeClient, sleeper: Sleeper) -> None:
    client, _ = make(httpx.Response(429, headers={"Retry-After": "7"}), ok(STATUS_OK))
    await client.training_status(TID)
    assert sleeper.delays == [7.0]


async def test_429_retry_after_header_http_date(make: MakeClient, sleeper: Sleeper) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    client, _ = make(httpx.Response(429, headers={"Retry-After": when}), ok(STATUS_OK))
    await client.training_status(TID)
    (delay,) = sleeper.delays
    assert 27.0 <= delay <= 30.0


async def test_rate_limit_body_on_200_uses_the_spam_filter_tip(make: MakeClient, sleeper: Sleeper) -> None:
    body = {
        "status": "error",
        "message": "Rate limit exceeded",
        "tips": "you are sending same request multiple times, spam filter is enabled, please wait for 30 seconds and try again",  # noqa: E501
    }
    client, _ = make(ok(body), ok(STATUS_OK))
    await client.training_status(TID)
    assert sleeper.delays == [30.0]


async def test_429_without_hint_uses_backoff(make: MakeClient, sleeper: Sleeper) -> None:
    client, _ = make(httpx.Response(429), ok(STATUS_OK))
    await client.training_status(TID)
    assert sleeper.delays == [0.5]


async def test_429_longer_than_the_cap_is_raised_at_once(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(ok({"status": "error", "message": "Rate limit exceeded", "retry_after": 120}, 429))
    with pytest.raises(RateLimited) as info:
        await client.training_status(TID)
    assert info.value.retry_after == 120
    assert len(script.requests) == 1
    assert sleeper.delays == []


async def test_429_counts_against_the_attempt_budget(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(*(httpx.Response(429, headers={"Retry-After": "1"}) for _ in range(3)), max_attempts=3)
    with pytest.raises(RateLimited):
        await client.training_status(TID)
    assert len(script.requests) == 3
    assert sleeper.delays == [1.0, 1.0]


# =========================================================================== cancel_training


async def test_cancel_uses_the_documented_spelling(make: MakeClient) -> None:
    answer = {"status": "success", "messege": "Training cancelled successfully", "data": ""}
    client, script = make(ok(answer))
    assert await client.cancel_training(TID) == "Training cancelled successfully"
    assert script.paths == [f"/api/v3/cancle_training/{TID}"]
    assert script.bodies == [{"key": KEY}]


async def test_cancel_falls_back_to_the_corrected_spelling_on_404(make: MakeClient) -> None:
    client, script = make(
        httpx.Response(404, text="<html>404 Not Found</html>"),
        ok({"status": "success", "message": "Training cancelled successfully"}),
        ok({"status": "success", "message": "cancelled again"}),
    )
    assert await client.cancel_training(TID) == "Training cancelled successfully"
    assert script.paths == [f"/api/v3/cancle_training/{TID}", f"/api/v3/cancel_training/{TID}"]
    # The working spelling is remembered.
    assert await client.cancel_training("Other1234") == "cancelled again"
    assert script.paths[-1] == "/api/v3/cancel_training/Other1234"


async def test_cancel_404_on_both_spellings_is_not_found(make: MakeClient) -> None:
    not_found = {"status": "error", "messege": "Training ID does not exist"}
    client, script = make(ok(not_found, 404), ok(not_found, 404))
    with pytest.raises(TrainingNotFound):
        await client.cancel_training(TID)
    assert script.paths == [f"/api/v3/cancle_training/{TID}", f"/api/v3/cancel_training/{TID}"]


async def test_cancel_fallback_method_not_allowed_keeps_the_original_error(make: MakeClient) -> None:
    client, script = make(ok({"status": "error", "messege": "Training ID does not exist"}, 404), httpx.Response(405))
    with pytest.raises(TrainingNotFound) as info:
        await client.cancel_training(TID)
    assert info.value.provider_message == "Training ID does not exist"
    assert len(script.requests) == 2


async def test_cancel_not_found_in_a_200_body_does_not_fall_back(make: MakeClient) -> None:
    client, script = make(ok({"status": "error", "messege": "Training ID does not exist"}))
    with pytest.raises(TrainingNotFound):
        await client.cancel_training(TID)
    assert len(script.requests) == 1


async def test_cancel_is_retried_on_the_same_path(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(httpx.Response(502), ok({"status": "success", "messege": "ok"}))
    assert await client.cancel_training(TID) == "ok"
    assert script.paths == [f"/api/v3/cancle_training/{TID}"] * 2
    assert sleeper.delays == [0.5]


async def test_cancel_without_message_returns_empty_text(make: MakeClient) -> None:
    client, _ = make(ok({"status": "success"}))
    assert await client.cancel_training(TID) == ""


# =========================================================================== list / delete / crop


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"status": "success", "messege": "model list", "data": []}, []),
        ({"status": "success", "messege": "model list", "data": None}, []),
        ({"status": "success", "messege": "model list", "data": ["F5jvdzGnYi", "Abc123"]}, [TID, "Abc123"]),
        (
            {
                "status": "success",
                "message": "model list",
                "data": [{"training_id": "A1"}, {"model_id": "B2"}, {"id": 33}, {"name": "no id"}, "A1", 44, None],
            },
            ["A1", "B2", "33", "44"],
        ),
        (["X1", "X2"], ["X1", "X2"]),
    ],
)
async def test_list_trainings_shapes(make: MakeClient, payload: object, expected: list[str]) -> None:
    client, script = make(ok(payload))
    assert await client.list_trainings() == expected
    assert script.paths == ["/api/v3/finetune_list"]
    assert script.bodies == [{"key": KEY}]


@pytest.mark.parametrize(
    "payload", [{"status": "success", "messege": "model list"}, {"status": "success", "data": "x"}]
)
async def test_list_trainings_unexpected_shape_is_not_an_empty_list(make: MakeClient, payload: object) -> None:
    client, _ = make(ok(payload))
    with pytest.raises(ProviderUnavailable):
        await client.list_trainings()


async def test_list_trainings_invalid_key(make: MakeClient) -> None:
    client, _ = make(ok({"status": "error", "messege": "Invalid Api Key"}, 401))
    with pytest.raises(InvalidApiKey):
        await client.list_trainings()


async def test_delete_training(make: MakeClient) -> None:
    client, script = make(ok({"status": "success", "messege": "Model deleted successfully", "data": ""}))
    assert await client.delete_training(TID) == "Model deleted successfully"
    assert script.paths == [f"/api/v3/finetune/delete/{TID}"]
    assert script.bodies == [{"key": KEY}]


async def test_delete_unknown_training(make: MakeClient) -> None:
    client, script = make(ok({"status": "error", "messege": "Training ID does not exist"}, 404))
    with pytest.raises(TrainingNotFound):
        await client.delete_training(TID)
    assert len(script.requests) == 1


@pytest.mark.parametrize("bad", ["", "   ", "../finetune_list", "a/b", "a?b=c", "..", "id with space"])
async def test_malformed_training_ids_never_reach_the_provider(make: MakeClient, bad: str) -> None:
    client, script = make()
    for call in (client.training_status, client.cancel_training, client.delete_training):
        with pytest.raises(TrainingNotFound):
            await call(bad)
    assert script.requests == []


async def test_training_id_is_trimmed(make: MakeClient) -> None:
    client, script = make(ok(STATUS_OK))
    await client.training_status(f"  {TID}\n")
    assert script.paths == [f"/api/v3/fine_tune_status/{TID}"]


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("https://stablediffusionapi.com", "https://stablediffusionapi.com/api/v3"),
        ("https://stablediffusionapi.com/", "https://stablediffusionapi.com/api/v3"),
        ("https://modelslab.com/api", "https://modelslab.com/api/v3"),
        ("https://modelslab.com/api/", "https://modelslab.com/api/v3"),
        ("https://modelslab.com/api/v3/", "https://modelslab.com/api/v3"),
        ("https://stablediffusionapi.com/api/sandbox/v3", "https://stablediffusionapi.com/api/sandbox/v3"),
        ("http://localhost:8081/proxy", "http://localhost:8081/proxy/api/v3"),
    ],
)
async def test_base_url_normalization(make: MakeClient, base_url: str, root: str) -> None:
    client, script = make(ok({"status": "success", "data": []}), base_url=base_url)
    assert client.api_root == root
    await client.list_trainings()
    assert str(script.requests[0].url) == f"{root}/finetune_list"


@pytest.mark.parametrize("bad", ["stablediffusionapi.com", "ftp://x.example", "https://x.example/?key=leak1234"])
def test_bad_base_url_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        ProviderClient(bad, KEY)
    assert "leak1234" not in str(info.value)


async def test_redirects_are_not_followed(make: MakeClient, sleeper: Sleeper) -> None:
    moved = httpx.Response(301, headers={"Location": "https://modelslab.com/api/v3/finetune_list"})
    client, script = make(moved)
    with pytest.raises(ProviderUnavailable) as info:
        await client.list_trainings()
    assert info.value.status_code == 301 and info.value.retryable is False
    assert len(script.requests) == 1 and sleeper.delays == []


async def test_context_manager_closes_the_client() -> None:
    script = Script(ok(STATUS_OK))
    async with ProviderClient(BASE, KEY, transport=httpx.MockTransport(script)) as client:
        await client.training_status(TID)
    with pytest.raises(RuntimeError):
        await client.training_status(TID)
    assert len(script.requests) == 1


# =========================================================================== the key stays secret


async def test_key_not_in_client_repr() -> None:
    client = ProviderClient(BASE, KEY)
    try:
        assert KEY not in repr(client)
        assert KEY not in str(client)
        assert KEY not in repr(vars(client))
    finally:
        await client.aclose()


def _error_texts(error: BaseException) -> list[str]:
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), repr(current.args)]
        if isinstance(current, ProviderError):
            texts += [current.user_message, current.provider_message or ""]
        current = current.__cause__ or current.__context__
    return texts


ECHOES = [
    ok({"status": "error", "message": f"Invalid Api Key {KEY}", "key": KEY}),
    ok({"status": "error", "message": {"key": [f"The key {KEY} is invalid."]}}),
    ok({"status": "error", "message": f"Rate limit exceeded for {KEY}", "tips": f"{KEY} wait 5 seconds"}, 429),
    ok({"status": "failed", "message": f"Failed for {KEY}", "key": KEY}),
    ok({"status": "error", "message": f"credits exhausted for {KEY}"}, 402),
    ok({"status": "error", "message": f"server exploded with {KEY}"}, 500),
    ok({"status": "error", "message": f"Training ID does not exist ({KEY})"}, 404),
    httpx.Response(200, text=f"<html>{KEY}</html>"),
]


@pytest.mark.parametrize("response", ECHOES)
async def test_key_not_in_any_error_or_log(
    make: MakeClient, caplog: pytest.LogCaptureFixture, response: httpx.Response
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make(response, response, response, response, response, max_attempts=2)
    errors: list[ProviderError] = []
    answers: list[object] = []
    for call in (lambda: client.submit_training(page_request()), lambda: client.training_status(TID)):
        try:
            answers.append(await call())
        except ProviderError as error:
            errors.append(error)
    assert len(errors) + len(answers) == 2
    for raised in errors:
        for text in _error_texts(raised):
            assert KEY not in text
    for answer in answers:  # a failure body from fine_tune_status is the training's failure
        assert KEY not in repr(answer)
    assert KEY not in caplog.text
    assert all(KEY not in str(record.args) for record in caplog.records)


async def test_transport_errors_do_not_leak_the_key(make: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, script = make(
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.ConnectTimeout("slow"),
        httpx.RemoteProtocolError("gone"),
    )
    with pytest.raises(SubmissionUncertain) as uncertain:
        await client.submit_training(page_request())
    with pytest.raises(ProviderUnavailable) as unavailable:
        await client.training_status(TID)
    assert len(script.requests) == 5
    for error in (uncertain.value, unavailable.value):
        assert all(KEY not in text for text in _error_texts(error))
    assert KEY not in caplog.text


async def test_logs_show_method_path_status_and_retries(make: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.provider.client")
    client, _ = make(httpx.Response(503), ok(STATUS_OK))
    await client.training_status(TID)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"POST /api/v3/fine_tune_status/{TID} -> 503 in" in m and m.endswith("ms") for m in debug)
    assert any(f"POST /api/v3/fine_tune_status/{TID} -> 200 in" in m for m in debug)
    assert len(warnings) == 1 and "retry 1 of 3" in warnings[0] and "HTTP 503" in warnings[0]
    assert KEY not in caplog.text


# -- a failed training versus a failed call (fine_tune_status) ----------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"status": "failed", "messege": "Training failed: out of GPU memory"}, "Training failed: out of GPU memory"),
        ({"status": "error", "message": "Images could not be downloaded"}, "Images could not be downloaded"),
        ({"status": "success", "messege": "failed", "data": " /n Step:1 Training Started /n CUDA error"}, "CUDA error"),
        ({"status": "failed", "messege": "failed", "data": "dataset too small"}, "dataset too small"),
    ],
)
async def test_status_reports_a_failed_training_with_its_reason(
    make: MakeClient, sleeper: Sleeper, body: dict[str, Any], reason: str
) -> None:
    client, script = make(ok(body))
    status = await client.training_status(TID)
    assert status.failed and status.status == "failed"
    assert status.failure_reason is not None and reason in status.failure_reason
    assert len(script.requests) == 1 and sleeper.delays == []


@pytest.mark.parametrize(
    "body",
    [
        {"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""},
        {"status": "error", "message": "Internal server error. Please try again."},
        {"status": "error", "message": "Service temporarily unavailable"},
    ],
)
async def test_status_generic_failure_bodies_are_failed_calls_and_retried(
    make: MakeClient, sleeper: Sleeper, body: dict[str, Any]
) -> None:
    client, script = make(ok(body), ok(STATUS_OK))
    status = await client.training_status(TID)
    assert status.status == "model_ready" and not status.failed
    assert len(script.requests) == 2 and len(sleeper.delays) == 1


async def test_status_not_found_is_raised_for_html_and_json(make: MakeClient) -> None:
    client, _ = make(httpx.Response(404, text="<html><body>404 Not Found</body></html>"))
    with pytest.raises(TrainingNotFound):
        await client.training_status(TID)


# -- redirects ------------------------------------------------------------------------------------


def redirect(status: int, location: str) -> httpx.Response:
    return httpx.Response(status, headers={"Location": location}, text="moved")


@pytest.mark.parametrize("code", [307, 308])
async def test_307_and_308_to_the_provider_are_followed_with_the_body_and_remembered(
    make: MakeClient, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    client, script = make(redirect(code, "https://modelslab.com/api/v3/lora_fine_tune"), ok(SUBMIT_OK), ok(STATUS_OK))
    result = await client.submit_training(page_request())
    assert result.training_id == TID
    assert [r.method for r in script.requests] == ["POST", "POST"]
    assert script.bodies[0] == script.bodies[1]  # same body, key included
    assert str(script.requests[1].url) == "https://modelslab.com/api/v3/lora_fine_tune"
    await client.training_status(TID)  # later calls go to the new address directly
    assert str(script.requests[2].url) == f"https://modelslab.com/api/v3/fine_tune_status/{TID}"
    assert client.api_root == "https://modelslab.com/api/v3"
    assert "SDAPI_BASE_URL" in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize(
    "location",
    ["https://evil.example/api/v3/lora_fine_tune", "http://modelslab.com/api/v3/lora_fine_tune"],
)
async def test_307_to_a_foreign_host_or_plain_http_is_not_followed(make: MakeClient, location: str) -> None:
    client, script = make(redirect(307, location), ok(SUBMIT_OK))
    with pytest.raises(ProviderMisconfigured) as info:
        await client.submit_training(page_request())
    assert len(script.requests) == 1
    assert info.value.location == location.split("?")[0]


@pytest.mark.parametrize("code", [301, 302, 303])
async def test_301_302_to_a_post_is_a_configuration_error_naming_the_target(make: MakeClient, code: int) -> None:
    client, script = make(redirect(code, "https://modelslab.com/api/v3/finetune_list?x=1"))
    with pytest.raises(ProviderMisconfigured) as info:
        await client.probe()
    assert info.value.location == "https://modelslab.com/api/v3/finetune_list"
    assert len(script.requests) == 1


async def test_redirect_loops_stop(make: MakeClient) -> None:
    loop = redirect(307, f"{BASE}/api/v3/finetune_list")
    client, script = make(loop, loop, loop, loop, loop, loop)
    with pytest.raises(ProviderMisconfigured):
        await client.probe()
    assert len(script.requests) == 4


# -- the duplicate window ---------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_status_and_list_answers_are_reused_within_the_duplicate_window(make: MakeClient) -> None:
    ticks = Ticks()
    listed = ok({"status": "success", "messege": "model list", "data": ["A1"]})
    client, script = make(ok(STATUS_OK), listed, ok(STATUS_OK), duplicate_window=30.0, clock=ticks)
    assert (await client.training_status(TID)).status == "model_ready"
    assert await client.list_trainings() == ["A1"]
    ticks.now += 29
    await client.training_status(TID)  # identical within 30 s: the provider would refuse it
    assert await client.list_trainings() == ["A1"]
    assert len(script.requests) == 2
    ticks.now += 2
    await client.training_status(TID)
    assert len(script.requests) == 3


async def test_failed_calls_and_other_trainings_are_not_reused(make: MakeClient, sleeper: Sleeper) -> None:
    ticks = Ticks()
    client, script = make(
        ok({"status": "error", "messege": "Training ID does not exist"}, 404),
        ok(STATUS_OK),
        ok(STATUS_OK),
        duplicate_window=30.0,
        clock=ticks,
    )
    with pytest.raises(TrainingNotFound):
        await client.training_status(TID)
    await client.training_status(TID)
    await client.training_status("OTHER00001")
    assert len(script.requests) == 3
