"""ProviderClient's v6 generation calls (text2img, fetch) and picture downloads, against MockTransport."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bot.jobs.image_api import GenerationAnswer, GenerationRequest
from bot.jobs.provider_errors import (
    GenerationFailed,
    ImageDownloadFailed,
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
)
from bot.provider.client import image_api_root
from tests.provider.scripted import KEY, MakeClient, Script, Sleeper, Step, ok

T2I_URL = "https://stablediffusionapi.com/api/v6/images/text2img"
FETCH_URL = "https://stablediffusionapi.com/api/v6/images/fetch"
RID = "13481504"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
IMG_1 = "https://pub-3626123a908346a7a8be8d9295f44e26.r2.dev/generations/0-a.png"
IMG_2 = "https://pub-3626123a908346a7a8be8d9295f44e26.r2.dev/generations/1-b.png"


def gen_request(**overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "base_model_id": "sdxl",
        "prompt": "photo of ab12cd man on the moon",
        "negative_prompt": "blurry, lowres",
        "lora_model": "F5jvdzGnYi",
        "lora_strength": 0.8,
        "width": 1024,
        "height": 1024,
        "samples": 2,
        "safety_checker": True,
        "seed": 12345,
        "track_id": "gen-42",
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


SUCCESS = {
    "status": "success",
    "generationTime": 14.07,
    "id": 13441520,
    "output": [IMG_1, IMG_2],
    "proxy_links": ["https://cdn2.stablediffusionapi.com/generations/0-a.png"],
    "nsfw_content_detected": [False, True],
    "meta": {"seed": 12345, "lora": "F5jvdzGnYi"},
    "track_id": "gen-42",
}
PROCESSING = {
    "status": "processing",
    "tip": "for faster speed, keep resolution upto 512x512",
    "eta": 29.247986918400002,
    "messege": "Try to fetch request after given estimated time",
    "fetch_result": f"https://stablediffusionapi.com/api/v3/dreambooth/fetch/{RID}",
    "webhook_status": "",
    "id": int(RID),
    "output": [],
    "future_links": ["https://cdn.stablediffusionapi.com/generations/0-future.png"],
    "meta": {"seed": "777"},
}


def _error_texts(error: BaseException) -> list[str]:
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), repr(current.args)]
        if isinstance(current, ProviderError):
            texts += [current.user_message, current.provider_message or ""]
        current = current.__cause__ or current.__context__
    return texts


# =========================================================================== the request


async def test_text2img_sends_the_documented_body_with_the_key_only_in_it(make: MakeClient) -> None:
    client, script = make(ok(SUCCESS))
    await client.text2img(gen_request())
    (request,) = script.requests
    assert request.method == "POST"
    assert str(request.url) == T2I_URL
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "key": KEY,
        "model_id": "sdxl",
        "prompt": "photo of ab12cd man on the moon",
        "negative_prompt": "blurry, lowres",
        "lora_model": "F5jvdzGnYi",
        "lora_strength": "0.8",
        "width": "1024",
        "height": "1024",
        "samples": "2",
        "safety_checker": "yes",
        "seed": 12345,
        "webhook": None,
        "track_id": "gen-42",
    }
    compact = request.content.replace(b" ", b"")
    assert b'"webhook":null' in compact and b'"seed":12345' in compact and b'"width":"1024"' in compact
    assert KEY not in str(request.url)
    assert all(KEY not in value for value in request.headers.values())


async def test_text2img_body_variants(make: MakeClient) -> None:
    client, script = make(ok(SUCCESS))
    await client.text2img(gen_request(negative_prompt=None, safety_checker=False, lora_strength=1, samples=1))
    body = script.bodies[0]
    assert "negative_prompt" not in body
    assert body["safety_checker"] == "no"
    assert body["lora_strength"] == "1.0"
    assert body["samples"] == "1"


@pytest.mark.parametrize(("strength", "sent"), [(0.45, "0.45"), (0.1, "0.1"), (0.456, "0.46"), (1.0, "1.0")])
def test_lora_strength_is_sent_as_a_short_string(strength: float, sent: str) -> None:
    assert gen_request(lora_strength=strength).to_body("k")["lora_strength"] == sent


@pytest.mark.parametrize(
    "overrides",
    [
        {"samples": 0},
        {"samples": 5},
        {"samples": True},
        {"lora_strength": 0.05},
        {"lora_strength": 1.01},
        {"lora_strength": float("nan")},
        {"width": 1025},
        {"height": 2048},
        {"width": 0},
        {"prompt": "  "},
        {"lora_model": ""},
        {"base_model_id": ""},
        {"track_id": ""},
        {"seed": -1},
        {"seed": 1.5},
    ],
)
def test_generation_request_refuses_out_of_range_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        gen_request(**overrides)


def test_generation_request_accepts_the_limits() -> None:
    request = gen_request(samples=4, lora_strength=0.1, width=1024, height=512, seed=0)
    assert request.to_body("k")["samples"] == "4"


async def test_text2img_uses_the_submit_timeout(make: MakeClient) -> None:
    client, script = make(ok(SUCCESS), timeout=12.0, submit_timeout=75.0)
    await client.text2img(gen_request())
    timeout = script.requests[0].extensions["timeout"]
    assert timeout["read"] == 75.0 and timeout["write"] == 75.0


# =========================================================================== answers


async def test_text2img_success_is_parsed(make: MakeClient) -> None:
    client, _ = make(ok({**SUCCESS, "key": KEY}))
    answer = await client.text2img(gen_request())
    assert answer.status == "success"
    assert answer.request_id == "13441520"
    assert answer.image_urls == (IMG_1, IMG_2)
    assert answer.nsfw == (False, True)
    assert answer.seed == 12345
    assert answer.eta_seconds is None
    assert answer.future_urls == ()
    assert "key" not in answer.raw and KEY not in repr(dict(answer.raw))
    assert answer.raw["track_id"] == "gen-42"
    with pytest.raises(TypeError):
        answer.raw["status"] = "x"  # type: ignore[index]


async def test_success_with_empty_output_uses_the_proxy_links(make: MakeClient) -> None:
    proxy = ["https://cdn2.stablediffusionapi.com/generations/0-a.png"]
    client, _ = make(ok({"status": "success", "id": 5, "output": [], "proxy_links": proxy}))
    answer = await client.text2img(gen_request())
    assert answer.image_urls == tuple(proxy)
    assert answer.nsfw == (False,)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (False, False)),
        (True, (True, True)),
        (False, (False, False)),
        ([True, False], (True, False)),
        (["false", "true"], (False, True)),
        ([True], (True, True)),  # a short list: the uncovered image is flagged, to be safe
        ([False], (False, False)),
    ],
)
def test_nsfw_shapes(value: object, expected: tuple[bool, ...]) -> None:
    payload: dict[str, Any] = {"status": "success", "output": [IMG_1, IMG_2]}
    if value is not None:
        payload["nsfw_content_detected"] = value
    assert GenerationAnswer.from_payload(payload).nsfw == expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"seed": 42}, 42),
        ({"seed": "42"}, 42),
        ({"seed": [42, 43]}, 42),
        ({"seed": ["7", "8"]}, 7),
        ({"seed": 42.0}, 42),
        ({"seed": "18446744073709551615"}, 18446744073709551615),
        ({"seed": None}, None),
        ({"seed": "random"}, None),
        ({"seed": []}, None),
        ({}, None),
        ("not a mapping", None),
    ],
)
def test_meta_seed_shapes(meta: object, expected: int | None) -> None:
    payload = {"status": "success", "output": [IMG_1], "meta": meta}
    assert GenerationAnswer.from_payload(payload).seed == expected


async def test_text2img_processing_is_an_answer_not_an_error(make: MakeClient) -> None:
    client, script = make(ok(PROCESSING))
    answer = await client.text2img(gen_request())
    assert answer.status == "processing"
    assert answer.request_id == RID
    assert answer.image_urls == () and answer.nsfw == ()
    assert answer.future_urls == ("https://cdn.stablediffusionapi.com/generations/0-future.png",)
    assert answer.eta_seconds == pytest.approx(29.2479869184)
    assert answer.seed == 777
    assert len(script.requests) == 1


@pytest.mark.parametrize(("eta", "expected"), [("12.5", 12.5), (10, 10.0), ("soon", None), (-3, None), (None, None)])
def test_eta_shapes(eta: object, expected: float | None) -> None:
    payload = {"status": "processing", "id": 1, "eta": eta}
    assert GenerationAnswer.from_payload(payload).eta_seconds == expected


def test_non_http_links_are_not_pictures() -> None:
    payload = {"status": "success", "output": ["data:image/png;base64,AAAA", "", 3, IMG_1, IMG_1]}
    assert GenerationAnswer.from_payload(payload).image_urls == (IMG_1,)


# =========================================================================== text2img errors

NOT_FOUND_BODY = {"status": "error", "message": "Model not found: xl-foo"}


@pytest.mark.parametrize(
    ("response", "expected", "provider_message"),
    [
        (ok(NOT_FOUND_BODY), RequestRejected, "Model not found: xl-foo"),
        (ok(NOT_FOUND_BODY, 400), RequestRejected, "Model not found: xl-foo"),
        (
            ok({"status": "error", "message": {"prompt": ["The prompt field is required."]}}),
            RequestRejected,
            "prompt: The prompt field is required.",
        ),
        (
            ok({"status": "error", "message": {"prompt": ["The prompt field is required."]}}, 422),
            RequestRejected,
            "prompt: The prompt field is required.",
        ),
        (ok({"status": "error", "messege": "Invalid Api Key"}), InvalidApiKey, "Invalid Api Key"),
        (ok({"status": "error", "message": "Invalid API key"}, 401), InvalidApiKey, "Invalid API key"),
        (httpx.Response(401, text="Unauthorized"), InvalidApiKey, None),
        (
            ok({"status": "error", "message": "Insufficient credits. Please add more credits to continue."}, 402),
            InsufficientCredits,
            "Insufficient credits. Please add more credits to continue.",
        ),
        (
            ok({"status": "error", "messege": "Insufficient credits. Please add more credits to continue."}),
            InsufficientCredits,
            "Insufficient credits. Please add more credits to continue.",
        ),
        (
            ok({"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}),
            RequestRejected,
            "Failed, Try Again",
        ),
        (
            ok({"status": "failed", "id": 991, "message": "Image generation failed. Please try again.", "output": []}),
            GenerationFailed,
            "Image generation failed. Please try again.",
        ),
        (
            ok({"status": "error", "message": "This feature requires a premium subscription"}, 403),
            RequestRejected,
            "This feature requires a premium subscription",
        ),
        (ok({"status": "error", "message": "Internal server error."}, 500), ProviderUnavailable, None),
        (ok({"status": "error", "message": "bad gateway"}, 502), SubmissionUncertain, None),
        (httpx.Response(504, text="<html>Gateway Time-out</html>"), SubmissionUncertain, None),
        (httpx.Response(200, text="<html>maintenance</html>"), SubmissionUncertain, None),
        (httpx.Response(200, json=["not", "an", "object"]), SubmissionUncertain, None),
        (ok({"status": "success", "id": 1, "output": []}), SubmissionUncertain, None),
        (ok({"status": "processing", "eta": 10, "output": []}), SubmissionUncertain, None),
        (ok({"status": "queued", "id": 1}), SubmissionUncertain, None),
    ],
)
async def test_text2img_error_shapes(
    make: MakeClient,
    sleeper: Sleeper,
    response: httpx.Response,
    expected: type[ProviderError],
    provider_message: str | None,
) -> None:
    client, script = make(response, ok(SUCCESS))
    with pytest.raises(ProviderError) as info:
        await client.text2img(gen_request())
    assert type(info.value) is expected
    if provider_message is not None:
        assert info.value.provider_message == provider_message
        assert provider_message in info.value.user_message or expected in (InvalidApiKey, InsufficientCredits)
    assert len(script.requests) == 1
    assert sleeper.delays == []


async def test_text2img_generation_failure_reads_as_pictures_not_made(make: MakeClient) -> None:
    client, _ = make(ok({"status": "failed", "id": 991, "message": "NSFW content blocked", "output": []}))
    with pytest.raises(GenerationFailed) as info:
        await client.text2img(gen_request())
    assert info.value.user_message == "The image service could not make these pictures: NSFW content blocked"


async def test_text2img_queue_full_is_refused_with_retry_after(make: MakeClient, sleeper: Sleeper) -> None:
    body = {"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests allowed.", "retry_after": 30}
    client, script = make(ok(body, 429), ok(SUCCESS))
    with pytest.raises(RateLimited) as info:
        await client.text2img(gen_request())
    assert info.value.kind == "queue_full"
    assert info.value.retry_after == 30
    assert info.value.definitely_not_accepted
    assert len(script.requests) == 1 and sleeper.delays == []


@pytest.mark.parametrize("status", [200, 429])
async def test_text2img_spam_filter_is_uncertain(make: MakeClient, sleeper: Sleeper, status: int) -> None:
    body = {
        "status": "error",
        "message": "Rate limit exceeded",
        "tips": "you are sending same request multiple times, spam filter is enabled, "
        "please wait for 30 seconds and try again",
    }
    client, script = make(ok(body, status), ok(SUCCESS))
    with pytest.raises(SubmissionUncertain) as info:
        await client.text2img(gen_request())
    assert info.value.provider_message == "Rate limit exceeded"
    assert len(script.requests) == 1 and sleeper.delays == []


async def test_text2img_bare_429_is_uncertain(make: MakeClient) -> None:
    client, script = make(httpx.Response(429, text="Too Many Requests"), ok(SUCCESS))
    with pytest.raises(SubmissionUncertain):
        await client.text2img(gen_request())
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.WriteTimeout("timed out"),
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
    ],
)
async def test_text2img_is_never_retried_once_it_may_have_been_sent(
    make: MakeClient, sleeper: Sleeper, exc: Exception
) -> None:
    client, script = make(exc, ok(SUCCESS))
    with pytest.raises(SubmissionUncertain) as info:
        await client.text2img(gen_request())
    assert len(script.requests) == 1
    assert sleeper.delays == []
    assert info.value.__cause__ is exc
    assert "pictures" in info.value.user_message and "training" not in info.value.user_message


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("p")])
async def test_text2img_connect_failures_are_unavailable(make: MakeClient, sleeper: Sleeper, exc: Exception) -> None:
    client, script = make(exc, ok(SUCCESS))
    with pytest.raises(ProviderUnavailable) as info:
        await client.text2img(gen_request())
    assert not isinstance(info.value, SubmissionUncertain)
    assert len(script.requests) == 1 and sleeper.delays == []


# =========================================================================== fetch


async def test_fetch_sends_the_request_id_in_the_body(make: MakeClient) -> None:
    client, script = make(ok({"status": "success", "output": [IMG_1], "meta": {"seed": [5]}}))
    answer = await client.fetch_generation(RID)
    assert script.urls == [FETCH_URL]
    assert script.bodies == [{"key": KEY, "request_id": RID}]
    assert answer.status == "success"
    assert answer.request_id == RID  # the answer had none: the asked id is kept
    assert answer.image_urls == (IMG_1,) and answer.seed == 5


async def test_fetch_processing_answer(make: MakeClient) -> None:
    client, _ = make(ok({"status": "processing", "id": int(RID), "eta": "8", "message": "Your request is processed"}))
    answer = await client.fetch_generation(RID)
    assert (answer.status, answer.request_id, answer.eta_seconds, answer.image_urls) == ("processing", RID, 8.0, ())


@pytest.mark.parametrize("refusal", [404, 405])
async def test_fetch_falls_back_to_the_path_form_and_remembers_it(make: MakeClient, refusal: int) -> None:
    nginx = httpx.Response(refusal, text="<html><center>nginx</center></html>")
    success = {"status": "success", "id": int(RID), "output": [IMG_1]}
    client, script = make(nginx, ok(success), ok(success))
    assert (await client.fetch_generation(RID)).image_urls == (IMG_1,)
    assert (await client.fetch_generation("777")).image_urls == (IMG_1,)
    assert script.urls == [FETCH_URL, f"{FETCH_URL}/{RID}", f"{FETCH_URL}/777"]
    assert script.bodies == [{"key": KEY, "request_id": RID}, {"key": KEY}, {"key": KEY}]


async def test_fetch_404_on_both_forms_raises_the_first_error_and_keeps_the_order(make: MakeClient) -> None:
    client, script = make(
        httpx.Response(404, text="<html>nope</html>"),
        httpx.Response(404, text="<html>nope either</html>"),
        ok({"status": "success", "output": [IMG_1]}),
    )
    with pytest.raises(RequestRejected) as info:
        await client.fetch_generation(RID)
    assert info.value.status_code == 404
    assert script.urls == [FETCH_URL, f"{FETCH_URL}/{RID}"]
    await client.fetch_generation(RID)
    assert script.urls[-1] == FETCH_URL


async def test_fetch_request_not_found_is_a_failed_generation(make: MakeClient) -> None:
    body = {"status": "error", "message": "Request not found"}
    client, script = make(ok(body, 404), ok(body, 404))
    with pytest.raises(GenerationFailed) as info:
        await client.fetch_generation(RID)
    assert info.value.provider_message == "Request not found"
    assert len(script.requests) == 2  # both forms asked, neither knows it


async def test_fetch_not_found_at_200_does_not_fall_back(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(ok({"status": "error", "message": "Request id not found"}))
    with pytest.raises(GenerationFailed):
        await client.fetch_generation(RID)
    assert len(script.requests) == 1 and sleeper.delays == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"status": "failed", "id": int(RID), "message": "Image generation failed. Please try again.", "output": []},
            "Image generation failed. Please try again.",
        ),
        ({"status": "error", "messege": "NSFW content blocked"}, "NSFW content blocked"),
    ],
)
async def test_fetch_failure_body_is_a_failed_generation(
    make: MakeClient, sleeper: Sleeper, body: dict[str, Any], reason: str
) -> None:
    client, script = make(ok(body))
    with pytest.raises(GenerationFailed) as info:
        await client.fetch_generation(RID)
    assert info.value.provider_message == reason
    assert info.value.user_message == f"The image service could not make these pictures: {reason}"
    assert len(script.requests) == 1 and sleeper.delays == []


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (ok({"status": "error", "message": "Invalid Api Key"}), InvalidApiKey),
        (ok({"status": "error", "message": "Insufficient credits"}, 402), InsufficientCredits),
        (ok({"status": "error", "message": {"request_id": ["The request id field is required."]}}), RequestRejected),
        (ok({"status": "error", "message": "forbidden"}, 403), RequestRejected),
    ],
)
async def test_fetch_call_errors_are_not_generation_failures(
    make: MakeClient, sleeper: Sleeper, response: httpx.Response, expected: type[ProviderError]
) -> None:
    client, script = make(response)
    with pytest.raises(ProviderError) as info:
        await client.fetch_generation(RID)
    assert type(info.value) is expected
    assert len(script.requests) == 1 and sleeper.delays == []


@pytest.mark.parametrize(
    "failure",
    [
        lambda: httpx.Response(503, text="Service Unavailable"),
        lambda: ok({"status": "error", "message": "Internal server error. Please try again."}, 500),
        lambda: httpx.Response(200, text="<html>oops</html>"),
        lambda: httpx.ReadTimeout("slow"),
        lambda: ok({"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}),
    ],
)
async def test_fetch_is_retried(make: MakeClient, sleeper: Sleeper, failure: Callable[[], Step]) -> None:
    client, script = make(failure(), ok({"status": "success", "output": [IMG_1]}))
    answer = await client.fetch_generation(RID)
    assert answer.image_urls == (IMG_1,)
    assert script.urls == [FETCH_URL, FETCH_URL]
    assert sleeper.delays == [0.5]


async def test_fetch_gives_up_after_max_attempts(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(*(httpx.Response(503) for _ in range(4)))
    with pytest.raises(ProviderUnavailable):
        await client.fetch_generation(RID)
    assert len(script.requests) == 4 and sleeper.delays == [0.5, 1.0, 2.0]


async def test_fetch_waits_out_a_rate_limit(make: MakeClient, sleeper: Sleeper) -> None:
    limited = ok({"status": "error", "message": "Rate limit exceeded", "retry_after": 7}, 429)
    client, script = make(limited, ok({"status": "success", "output": [IMG_1]}))
    await client.fetch_generation(RID)
    assert sleeper.delays == [7] and len(script.requests) == 2


async def test_fetch_answers_are_never_reused(make: MakeClient) -> None:
    processing = ok({"status": "processing", "id": int(RID)})
    client, script = make(processing, ok({"status": "success", "output": [IMG_1]}), duplicate_window=30.0)
    assert (await client.fetch_generation(RID)).status == "processing"
    assert (await client.fetch_generation(RID)).status == "success"
    assert len(script.requests) == 2


async def test_fetch_success_without_links_is_not_understood(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(ok({"status": "success", "output": []}))
    with pytest.raises(ProviderUnavailable) as info:
        await client.fetch_generation(RID)
    assert info.value.retryable is False
    assert len(script.requests) == 1


@pytest.mark.parametrize("bad", ["", "../v3/finetune_list", "1 2", "a/b", "x?key=1"])
async def test_fetch_refuses_malformed_ids_without_a_request(make: MakeClient, bad: str) -> None:
    client, script = make()
    with pytest.raises(ValueError):
        await client.fetch_generation(bad)
    assert script.requests == []


async def test_fetch_result_on_another_host_is_never_called(make: MakeClient) -> None:
    images = Script()  # the picture client must not be used either
    foreign = {**PROCESSING, "fetch_result": f"https://evil.example/api/v6/images/fetch/{RID}"}
    client, script = make(ok(foreign), ok({"status": "success", "output": [IMG_1]}), images=images)
    answer = await client.text2img(gen_request())
    assert "evil.example" not in repr(answer)
    await client.fetch_generation(answer.request_id or "")
    assert [request.url.host for request in script.requests] == ["stablediffusionapi.com"] * 2
    assert images.requests == []


# =========================================================================== roots and redirects


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("https://stablediffusionapi.com/api/v3", "https://stablediffusionapi.com/api/v6"),
        ("https://modelslab.com/api/sandbox/v3", "https://modelslab.com/api/v6"),
        ("http://127.0.0.1:8080/relocated/api/v3", "http://127.0.0.1:8080/relocated/api/v6"),
        ("https://example.org/v3", "https://example.org/api/v6"),
    ],
)
def test_image_api_root(root: str, expected: str) -> None:
    assert image_api_root(root) == expected


async def test_sandbox_base_uses_the_plain_v6_root(make: MakeClient) -> None:
    client, script = make(ok(SUCCESS), base_url="https://modelslab.com/api/sandbox/v3")
    await client.text2img(gen_request())
    assert script.urls == ["https://modelslab.com/api/v6/images/text2img"]


def redirect(status: int, location: str) -> httpx.Response:
    return httpx.Response(status, headers={"Location": location}, text="moved")


@pytest.mark.parametrize("code", [307, 308])
async def test_a_v6_redirect_to_the_provider_is_followed_and_remembered(
    make: MakeClient, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    caplog.set_level(logging.DEBUG)
    client, script = make(
        redirect(code, "https://modelslab.com/api/v6/images/text2img"),
        ok(PROCESSING),
        ok({"status": "success", "output": [IMG_1]}),
    )
    answer = await client.text2img(gen_request())
    assert answer.status == "processing"
    assert script.urls[:2] == [T2I_URL, "https://modelslab.com/api/v6/images/text2img"]
    assert script.bodies[0] == script.bodies[1]
    await client.fetch_generation(RID)
    assert script.urls[2] == "https://modelslab.com/api/v6/images/fetch"
    assert client.image_api_root == "https://modelslab.com/api/v6"
    assert client.api_root == "https://stablediffusionapi.com/api/v3"  # v6's move says nothing of v3
    assert KEY not in caplog.text


async def test_a_learned_v3_move_applies_to_v6(make: MakeClient) -> None:
    client, script = make(
        redirect(308, "https://modelslab.com/api/v3/finetune_list"),
        ok({"status": "success", "data": []}),
        ok(SUCCESS),
        ok({"status": "success", "output": [IMG_1]}),
    )
    assert await client.list_trainings() == []
    await client.text2img(gen_request())
    await client.fetch_generation(RID)
    assert script.urls[2:] == [
        "https://modelslab.com/api/v6/images/text2img",
        "https://modelslab.com/api/v6/images/fetch",
    ]


@pytest.mark.parametrize(
    "response",
    [
        redirect(307, "https://evil.example/api/v6/images/text2img"),
        redirect(307, "http://modelslab.com/api/v6/images/text2img"),
        redirect(302, "https://modelslab.com/api/v6/images/text2img"),
    ],
)
async def test_a_v6_redirect_elsewhere_is_not_followed(make: MakeClient, response: httpx.Response) -> None:
    client, script = make(response, ok(SUCCESS))
    with pytest.raises(ProviderMisconfigured):
        await client.text2img(gen_request())
    assert len(script.requests) == 1


async def test_a_fetch_redirect_elsewhere_is_not_followed(make: MakeClient, sleeper: Sleeper) -> None:
    client, script = make(redirect(307, "https://evil.example/api/v6/images/fetch"))
    with pytest.raises(ProviderMisconfigured):
        await client.fetch_generation(RID)
    assert len(script.requests) == 1 and sleeper.delays == []


# =========================================================================== downloads


def picture(content: bytes = PNG, mime: str = "image/png", status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=content, headers={"Content-Type": mime, **headers})


async def test_download_returns_the_bytes_and_type_and_never_sends_the_key(make: MakeClient) -> None:
    images = Script(picture(mime="image/png; charset=binary"))
    client, script = make(images=images)
    data, mime = await client.download_image(IMG_1)
    assert (data, mime) == (PNG, "image/png")
    (request,) = images.requests
    assert request.method == "GET" and str(request.url) == IMG_1
    assert request.content == b""
    assert KEY not in str(request.url) and all(KEY not in value for value in request.headers.values())
    assert "content-type" not in request.headers
    assert request.headers["accept"] == "image/*"
    assert script.requests == []  # not through the provider's client


async def test_download_follows_redirects_without_the_key(make: MakeClient) -> None:
    cdn = "https://cdn.example.net/0-a.png"
    images = Script(redirect(302, cdn), picture())
    client, _ = make(images=images)
    assert (await client.download_image(IMG_1))[0] == PNG
    assert [str(r.url) for r in images.requests] == [IMG_1, cdn]
    for request in images.requests:
        assert KEY not in str(request.url) and request.content == b""
        assert all(KEY not in value for value in request.headers.values())


async def test_download_stops_after_three_redirects(make: MakeClient, sleeper: Sleeper) -> None:
    images = Script(*(redirect(302, f"https://cdn.example.net/{n}.png") for n in range(5)))
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1)
    assert not info.value.retryable
    assert len(images.requests) == 4 and sleeper.delays == []


async def test_download_refuses_a_declared_size_over_the_cap(make: MakeClient) -> None:
    images = Script(picture(PNG * 10))
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1, max_bytes=100)
    assert "too large" in info.value.user_message
    assert len(images.requests) == 1


async def test_download_enforces_the_cap_while_streaming(make: MakeClient) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(100):
            sent.append(n)
            yield PNG

    images = Script(httpx.Response(200, headers={"Content-Type": "image/png"}, content=chunks()))
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1, max_bytes=len(PNG) * 3)
    assert "too large" in info.value.user_message
    assert len(sent) < 10  # stopped reading, did not buffer everything first


async def test_download_at_the_cap_is_fine(make: MakeClient) -> None:
    client, _ = make(images=Script(picture()))
    assert (await client.download_image(IMG_1, max_bytes=len(PNG)))[0] == PNG


@pytest.mark.parametrize("mime", ["text/html", "application/json", "image/svg+xml"])
async def test_download_refuses_what_is_not_a_picture(make: MakeClient, sleeper: Sleeper, mime: str) -> None:
    images = Script(picture(b"<html>login</html>", mime))
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1)
    assert not info.value.retryable and not info.value.expired
    assert len(images.requests) == 1 and sleeper.delays == []


async def test_download_recognises_an_untyped_picture(make: MakeClient) -> None:
    webp = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16
    client, _ = make(images=Script(picture(PNG, "application/octet-stream"), picture(webp, "binary/octet-stream")))
    assert await client.download_image(IMG_1) == (PNG, "image/png")
    assert await client.download_image(IMG_2) == (webp, "image/webp")


async def test_download_refuses_untyped_bytes_that_are_no_picture(make: MakeClient) -> None:
    client, _ = make(images=Script(picture(b"just some text", "application/octet-stream")))
    with pytest.raises(ImageDownloadFailed):
        await client.download_image(IMG_1)


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_download_of_an_expired_link(make: MakeClient, sleeper: Sleeper, status: int) -> None:
    images = Script(httpx.Response(status, text="<Error><Code>NoSuchKey</Code></Error>"), picture())
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1)
    assert info.value.expired and not info.value.retryable
    assert info.value.status_code == status
    assert "expired" in info.value.user_message
    assert len(images.requests) == 1 and sleeper.delays == []


@pytest.mark.parametrize(
    "failure",
    [lambda: httpx.Response(503), lambda: httpx.Response(429), lambda: httpx.ReadTimeout("slow")],
)
async def test_download_retries_transient_failures(
    make: MakeClient, sleeper: Sleeper, failure: Callable[[], Step]
) -> None:
    images = Script(failure(), failure(), picture())
    client, _ = make(images=images)
    assert (await client.download_image(IMG_1))[0] == PNG
    assert len(images.requests) == 3 and sleeper.delays == [0.5, 1.0]


async def test_download_gives_up_after_three_attempts(make: MakeClient, sleeper: Sleeper) -> None:
    images = Script(*(httpx.Response(502) for _ in range(4)))
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1)
    assert info.value.retryable and info.value.status_code == 502
    assert len(images.requests) == 3 and len(sleeper.delays) == 2


async def test_download_other_client_errors_are_not_retried(make: MakeClient, sleeper: Sleeper) -> None:
    images = Script(httpx.Response(400), picture())
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed) as info:
        await client.download_image(IMG_1)
    assert not info.value.retryable and not info.value.expired
    assert len(images.requests) == 1


@pytest.mark.parametrize(
    "url", ["ftp://cdn.example.net/a.png", "file:///etc/passwd", "data:image/png;base64,AAAA", "/a.png", "https://"]
)
async def test_download_only_fetches_http_links(make: MakeClient, url: str) -> None:
    images = Script(picture())
    client, _ = make(images=images)
    with pytest.raises(ImageDownloadFailed):
        await client.download_image(url)
    assert images.requests == []


async def test_download_uses_the_provider_transport_by_default_and_closes(make: MakeClient) -> None:
    client, script = make(picture())
    assert (await client.download_image(IMG_1))[0] == PNG
    assert script.requests[0].method == "GET" and script.requests[0].content == b""
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.download_image(IMG_1)
    assert len(script.requests) == 1


async def test_download_logs_no_query_string(make: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.provider")  # httpx's own logger is quietened by the bot
    client, _ = make(images=Script(httpx.Response(503), picture()))
    await client.download_image(f"{IMG_1}?X-Amz-Signature=s3cr3tsig")
    ours = [record.getMessage() for record in caplog.records if record.name.startswith("bot.provider")]
    assert any("/generations/0-a.png" in message for message in ours)
    assert all("s3cr3tsig" not in message for message in ours)


# =========================================================================== the key stays secret


ECHOES = [
    ok({"status": "error", "message": f"Invalid Api Key {KEY}", "key": KEY}),
    ok({"status": "error", "message": {"key": [f"The key {KEY} is invalid."]}}),
    ok({"status": "error", "message": f"Rate limit exceeded for {KEY}", "tips": f"{KEY} wait 5 seconds"}, 429),
    ok({"status": "failed", "id": 12, "message": f"Failed for {KEY}", "key": KEY}),
    ok({"status": "error", "message": f"credits exhausted for {KEY}"}, 402),
    ok({"status": "error", "message": f"server exploded with {KEY}"}, 500),
    ok({"status": "error", "message": f"Model not found: {KEY}"}, 404),
    ok({"status": "success", "output": [], "key": KEY, "message": KEY}),
    httpx.Response(200, text=f"<html>{KEY}</html>"),
]


@pytest.mark.parametrize("response", ECHOES)
async def test_key_not_in_any_error_answer_or_log(
    make: MakeClient, caplog: pytest.LogCaptureFixture, response: httpx.Response
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make(*([response] * 6), max_attempts=2)
    outcomes: list[object] = []
    for call in (lambda: client.text2img(gen_request()), lambda: client.fetch_generation(RID)):
        try:
            outcomes.append(await call())
        except ProviderError as error:
            outcomes.append(error)
            assert all(KEY not in text for text in _error_texts(error))
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert KEY not in repr(outcome)
    assert KEY not in caplog.text
    assert all(KEY not in str(record.args) for record in caplog.records)


async def test_key_not_in_answers(make: MakeClient) -> None:
    echo = {**SUCCESS, "key": KEY, "meta": {"seed": 1, "note": f"key={KEY}"}}
    client, _ = make(ok(echo), ok(echo))
    for answer in (await client.text2img(gen_request()), await client.fetch_generation(RID)):
        assert KEY not in repr(answer) and KEY not in json.dumps(dict(answer.raw))
        assert answer.raw["meta"]["note"] == "key=[redacted]"


async def test_transport_errors_do_not_leak_the_key(make: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make(httpx.ReadTimeout("timed out"), *(httpx.ConnectError("refused") for _ in range(4)))
    with pytest.raises(SubmissionUncertain) as uncertain:
        await client.text2img(gen_request())
    with pytest.raises(ProviderUnavailable) as unavailable:
        await client.fetch_generation(RID)
    for error in (uncertain.value, unavailable.value):
        assert all(KEY not in text for text in _error_texts(error))
    assert KEY not in caplog.text


def test_generation_errors_survive_pickling() -> None:
    import pickle

    failed = pickle.loads(pickle.dumps(GenerationFailed(provider_message="boom", status_code=200)))
    assert failed.user_message == "The image service could not make these pictures: boom"
    gone = pickle.loads(pickle.dumps(ImageDownloadFailed(status_code=404, expired=True)))
    assert gone.expired and not gone.retryable and gone.status_code == 404
