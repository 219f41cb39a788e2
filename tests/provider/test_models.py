"""Request body, response parsing and error types of the provider adapter (no HTTP here)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from bot.jobs.provider_errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.jobs.training_api import (
    DEFAULT_NEGATIVE_PROMPT,
    UNKNOWN_STATUS,
    SubmitResult,
    TrainingRequest,
    TrainingStatus,
    flatten_message,
    redact,
    split_log,
)

# The "Body" example of https://stablediffusionapi.com/docs/train-model/lora-finetune, verbatim.
LORA_PAGE_BODY = """{
    "key":"",
    "instance_prompt": "photo of ambika0 man",
    "class_prompt": "photo of a man",
    "base_model_type": "sdxl",
    "negative_prompt":" lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry",
    "images": [
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/1.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/2.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/3.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/4.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/5.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/6.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/7.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/8.png",
    "https://raw.githubusercontent.com/pnavitha/sampleImages/master/9.png"
  ],
    "seed": "0",
    "training_type": "men",
    "max_train_steps": "2",
    "lora_type":"lora",
    "webhook": null
}"""  # noqa: E501

PAGE_IMAGES = tuple(f"https://raw.githubusercontent.com/pnavitha/sampleImages/master/{n}.png" for n in range(1, 10))

# fine_tune_status example of the SDA / ModelsLab pages (literal " /n " separators).
STATUS_LOG_SLASH_N = (
    " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done, 4 Steps to go"
    " : ETA : 15 minutes /n Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes /n  /n Step:4 Model"
    " Uploaded, 2 Steps to go : ETA : 5 minutes /n Model loaded successfully"
)
# The same text as ModelsLab's OpenAPI writes it: real newlines, no leading separator.
STATUS_LOG_NEWLINES = (
    "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes\nStep:2 Training Done, 4 Steps to go"
    " : ETA : 15 minutes\nStep:3 Model Uploading, 3 Steps to go : ETA : 10 minutes\n\nStep:4 Model"
    " Uploaded, 2 Steps to go : ETA : 5 minutes\nModel loaded successfully"
)
EXPECTED_LINES = (
    "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
    "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes",
    "Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes",
    "Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes",
    "Model loaded successfully",
)


def page_request(**overrides: object) -> TrainingRequest:
    fields: dict[str, object] = {
        "instance_prompt": "photo of ambika0 man",
        "class_prompt": "photo of a man",
        "images": PAGE_IMAGES,
        "base_model_type": "sdxl",
        "max_train_steps": 2,
    }
    fields.update(overrides)
    return TrainingRequest(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TrainingRequest


def test_body_matches_the_lora_page_example_exactly() -> None:
    body = page_request().to_body("")
    assert body == json.loads(LORA_PAGE_BODY)
    # Same key order as the documentation, numbers as strings, webhook as JSON null.
    assert list(body) == list(json.loads(LORA_PAGE_BODY))
    assert body["max_train_steps"] == "2" and body["seed"] == "0" and body["webhook"] is None
    assert '"webhook": null' in json.dumps(body)


def test_default_negative_prompt_is_the_pages_string() -> None:
    assert json.loads(LORA_PAGE_BODY)["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT
    assert DEFAULT_NEGATIVE_PROMPT.startswith(" lowres, bad anatomy")


def test_body_carries_the_key_and_converts_fields() -> None:
    request = page_request(
        seed=1234,
        webhook="https://bot.example/webhooks/training/7/s3cr3t",
        training_type="women",
        lora_type="lycoris",
        base_model_type="normal",
        max_train_steps=18,
    )
    body = request.to_body("the-key")
    assert body["key"] == "the-key"
    assert body["seed"] == "1234"
    assert body["max_train_steps"] == "18"
    assert body["webhook"] == "https://bot.example/webhooks/training/7/s3cr3t"
    assert (body["training_type"], body["lora_type"], body["base_model_type"]) == ("women", "lycoris", "normal")
    assert "wandb_key" not in body
    assert isinstance(body["images"], list)


def test_defaults_are_sdxl_lora_men_20_steps() -> None:
    request = TrainingRequest("photo of sks man", "photo of a man", ("https://x/1.png",))
    body = request.to_body("k")
    assert (body["base_model_type"], body["lora_type"], body["training_type"]) == ("sdxl", "lora", "men")
    assert body["max_train_steps"] == "20"
    assert body["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT


def test_empty_webhook_is_sent_as_null() -> None:
    assert page_request(webhook="").to_body("k")["webhook"] is None


def test_images_list_is_stored_as_tuple() -> None:
    request = page_request(images=list(PAGE_IMAGES[:2]))
    assert request.images == PAGE_IMAGES[:2]
    assert isinstance(request.images, tuple)
    hash(request)  # frozen and hashable


@pytest.mark.parametrize(("overrides", "match"), [({"images": ()}, "image"), ({"max_train_steps": 0}, "steps")])
def test_request_validation(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        page_request(**overrides)


def test_webhook_secret_is_not_in_repr() -> None:
    request = page_request(webhook="https://bot.example/webhooks/training/7/s3cr3t-token")
    assert "s3cr3t-token" not in repr(request)


# --------------------------------------------------------------------------- SubmitResult


@pytest.mark.parametrize(
    ("payload", "expected_id"),
    [
        ({"status": "success", "messege": "deploying_gpu", "training_id": "F5jvdzGnYi"}, "F5jvdzGnYi"),
        ({"status": "success", "message": "deploying_gpu", "model_id": "M0d3l"}, "M0d3l"),
        ({"status": "success", "message": "deploying_gpu", "id": 13441520}, "13441520"),
        ({"status": "success", "messege": "deploying_gpu", "training_id": "", "id": "fallback"}, "fallback"),
    ],
)
def test_submit_result_id_variants(payload: dict[str, object], expected_id: str) -> None:
    result = SubmitResult.from_payload(payload)
    assert result.training_id == expected_id
    assert result.status == "deploying_gpu"


def test_submit_result_documented_response() -> None:
    payload = {
        "status": "success",
        "messege": "deploying_gpu",
        "data": "it will take upto 30 minutes.",
        "training_id": "F5jvdzGnYi",
        "key": "echoed",
    }
    result = SubmitResult.from_payload(payload)
    assert result == SubmitResult("F5jvdzGnYi", "deploying_gpu", "it will take upto 30 minutes.", result.raw)
    assert "key" not in result.raw
    assert result.raw["training_id"] == "F5jvdzGnYi"
    with pytest.raises(TypeError):
        result.raw["x"] = 1  # type: ignore[index]
    hash(result)  # raw is excluded from the hash


def test_submit_result_without_id_is_refused() -> None:
    with pytest.raises(ValueError, match="training id"):
        SubmitResult.from_payload({"status": "success", "messege": "deploying_gpu", "id": ""})


# --------------------------------------------------------------------------- TrainingStatus


@pytest.mark.parametrize("log", [STATUS_LOG_SLASH_N, STATUS_LOG_NEWLINES])
def test_status_log_is_split_and_eta_found(log: str) -> None:
    status = TrainingStatus.from_payload({"status": "success", "messege": "model_ready", "data": log})
    assert status.status == "model_ready"
    assert status.log_lines == EXPECTED_LINES
    assert status.eta == "5 minutes"


def test_status_word_is_stripped_and_lowercased_and_message_key_accepted() -> None:
    log = " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done, 4 Steps to go : ETA : 15 minutes"  # noqa: E501
    status = TrainingStatus.from_payload({"status": "success", "message": " Training_Started ", "data": log})
    assert status.status == "training_started"
    assert status.eta == "15 minutes"
    assert len(status.log_lines) == 2


def test_status_data_as_list_and_missing_parts() -> None:
    status = TrainingStatus.from_payload(
        {"status": "success", "messege": "deploying_gpu", "data": ["line one /n line two", "", "ETA : 25 minutes."]}
    )
    assert status.log_lines == ("line one", "line two", "ETA : 25 minutes.")
    assert status.eta == "25 minutes"

    empty = TrainingStatus.from_payload({"status": "success"})
    assert (empty.status, empty.log_lines, empty.eta) == (UNKNOWN_STATUS, (), None)


def test_webhook_body_parses_as_status() -> None:
    webhook = {
        "status": "success",
        "training_status": "deploying_gpu",
        "logs": "it will take upto 25 minutes",
        "model_id": "F5jvdzGnYi",
    }
    status = TrainingStatus.from_payload(webhook)
    assert status.status == "deploying_gpu"
    assert status.log_lines == ("it will take upto 25 minutes",)
    assert status.eta is None


def test_split_log_keeps_urls_with_slash_n() -> None:
    assert split_log("see https://cdn.example/n/abc /n next") == ("see https://cdn.example/n/abc", "next")
    assert split_log("a\r\nb\rc /n") == ("a", "b", "c")
    assert split_log(None) == ()


def test_flatten_field_errors() -> None:
    assert flatten_message({"prompt": ["The prompt field is required."]}) == "prompt: The prompt field is required."
    assert (
        flatten_message({"images": ["The images field is required.", "Too few."], "seed": "bad"})
        == "images: The images field is required. Too few.; seed: bad"
    )


def test_redact_drops_key_fields_and_masks_the_secret() -> None:
    cleaned = redact({"key": "abcdef123", "nested": [{"api_key": "x", "text": "was abcdef123"}]}, "abcdef123")
    assert cleaned == {"nested": [{"text": "was [redacted]"}]}


# --------------------------------------------------------------------------- errors


def test_error_hierarchy() -> None:
    for cls in (
        InvalidApiKey,
        InsufficientCredits,
        RateLimited,
        RequestRejected,
        TrainingNotFound,
        ProviderUnavailable,
        SubmissionUncertain,
    ):
        assert issubclass(cls, ProviderError)
        assert cls().user_message  # every error has a sentence for users
    assert issubclass(TrainingNotFound, RequestRejected)


def test_rate_limited_signature_and_message() -> None:
    error = RateLimited(30.0)
    assert error.retry_after == 30.0
    assert "30 seconds" in error.user_message
    assert RateLimited().retry_after is None
    assert RateLimited(-5).retry_after is None
    assert RateLimited(retry_after=float("inf")).retry_after is None
    assert "retry_after=30.0" in repr(error)


def test_request_rejected_shows_provider_text() -> None:
    error = RequestRejected(provider_message="prompt: The prompt field is required.", status_code=200)
    assert error.user_message == "The image service rejected the request: prompt: The prompt field is required."
    assert "[HTTP 200]" in str(error)


@pytest.mark.parametrize(
    "error",
    [
        RateLimited(12.5, provider_message="slow down", status_code=429),
        TrainingNotFound(provider_message="Training ID does not exist", status_code=404),
        ProviderUnavailable("down", status_code=503, retryable=False),
        InvalidApiKey(),
    ],
)
def test_errors_pickle_and_copy(error: ProviderError) -> None:
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is type(error)
        assert vars(clone) == vars(error)
        assert str(clone) == str(error)
