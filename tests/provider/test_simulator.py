"""The provider simulator over real loopback HTTP, driven with raw httpx (no project client).

Every server here (simulator, image host, webhook receiver) listens on 127.0.0.1; a guard
fixture refuses name resolution of anything else, so nothing can reach the internet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import random
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.simulator import STATUSES, FaultError, SimulatorConfig, start_simulator
from bot.simulator.testing import ImageHost, WebhookRecorder, jpeg_bytes, png_bytes
from tests.provider.simulated import STEP, served_url
from tests.provider.test_models import LORA_PAGE_BODY

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "sim-test-key-5f0c1d"

# The "Body" example of the LoRA page (lora-finetune-api-page.txt), verbatim. The tests swap the
# image URLs for loopback ones, fill in a key and, where they need webhooks, a webhook URL.


# The status page's model_ready example `data`, verbatim.
DOCS_MODEL_READY_DATA = (
    " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes /n Step:2 Training Done, 4 Steps to go"
    " : ETA : 15 minutes /n Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes /n  /n Step:4 Model"
    " Uploaded, 2 Steps to go : ETA : 5 minutes /n Model loaded successfully"
)


def page_body(host: ImageHost, *, webhook: str | None = None, count: int = 9, key: str = KEY) -> dict[str, Any]:
    body = json.loads(LORA_PAGE_BODY)
    body["key"] = key
    # Discord-CDN-like signed URLs: the query string must reach the image host untouched.
    body["images"] = [host.add_png(f"{i}.png", query=f"ex=6650&is=664f&hm=ab{i}cd&") for i in range(1, count + 1)]
    body["webhook"] = webhook
    return body


async def post(http: httpx.AsyncClient, running, path: str, body: Any) -> httpx.Response:
    return await http.post(f"{running.url}/api/v3/{path}", json=body)


async def submit(http, running, body) -> str:
    response = await post(http, running, "lora_fine_tune", body)
    data = response.json()
    assert data["status"] == "success", data
    return str(data["training_id"])


async def status_of(http, running, training_id: str, key: str = KEY) -> dict[str, Any]:
    response = await post(http, running, f"fine_tune_status/{training_id}", {"key": key})
    assert response.status_code == 200
    return dict(response.json())


# -- the documented happy path ------------------------------------------------------------------


async def test_lora_page_example_gets_the_documented_answer_and_webhooks_in_order(running, host, hooks, http):
    body = page_body(host, webhook=hooks.url)

    response = await post(http, running, "lora_fine_tune", body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert set(answer) == {"status", "messege", "data", "training_id"}
    assert answer["status"] == "success"
    assert answer["messege"] == "deploying_gpu"
    assert answer["data"] == "it will take upto 30 minutes."
    training_id = answer["training_id"]
    assert re.fullmatch(r"[A-Za-z0-9]{10}", training_id)

    received = await hooks.wait_for(8)
    assert [b["training_status"] for b in received] == list(STATUSES)
    for webhook, status in zip(hooks.received, STATUSES, strict=True):
        assert webhook.content_type == "application/json"
        assert webhook.path == "/webhooks/training/1/s3cr3t-token"
        assert set(webhook.json) == {"status", "training_status", "logs", "model_id"}
        assert webhook.json["status"] == "success"
        assert webhook.json["training_status"] == status
        assert webhook.json["model_id"] == training_id
        assert isinstance(webhook.json["logs"], str) and webhook.json["logs"]
    assert received[0]["logs"] == "it will take upto 25 minutes"

    status = await status_of(http, running, training_id)
    assert status == {"status": "success", "messege": "model_ready", "data": DOCS_MODEL_READY_DATA}

    # The simulator fetched each URL exactly as given, and saw 512x512 PNGs.
    assert sorted(host.requests) == sorted(u.removeprefix(host.base_url) for u in body["images"])
    training = running.simulator.trainings[training_id]
    assert [(i.width, i.height, i.format) for i in training.images] == [(512, 512, "PNG")] * 9
    assert [i.url for i in training.images] == body["images"]
    assert training.request["max_train_steps"] == "2" and training.request["seed"] == "0"
    assert "key" not in training.request
    assert training.warnings == []
    deliveries = training.deliveries
    assert [d.training_status for d in deliveries] == list(STATUSES)
    assert all(d.http_status == 200 and d.attempt == 1 and not d.dropped for d in deliveries)


async def test_page_example_without_webhook_walks_and_sends_nothing(running, host, hooks, http):
    training_id = await submit(http, running, page_body(host, webhook=None))
    await running.simulator.wait_for_status(training_id, "model_ready")
    assert running.simulator.trainings[training_id].deliveries == []

    # The PHP/Python samples send "webhook": "" instead of null.
    training_id = await submit(http, running, {**page_body(host), "webhook": ""})
    await running.simulator.wait_for_status(training_id, "model_ready")
    assert running.simulator.trainings[training_id].webhook_url is None
    assert hooks.received == []


async def test_status_reports_every_step_in_messege_with_eta_log(running, host, http):
    running.simulator.step_seconds = 60  # walk only when told to
    training_id = await submit(http, running, page_body(host, count=1))
    await running.simulator.wait_for_status(training_id, "deploying_gpu")
    seen = []
    for index, expected in enumerate(STATUSES):
        if index:
            advanced = await http.post(f"{running.url}/_sim/trainings/{training_id}/advance")
            assert advanced.json() == {"advanced": True}
            await running.simulator.wait_for_status(training_id, expected)
        status = await status_of(http, running, training_id)
        assert set(status) == {"status", "messege", "data"}
        assert status["status"] == "success"
        assert status["messege"] == expected
        seen.append(status["data"])
    assert seen[0] == "it will take upto 30 minutes."
    assert seen[1] == " /n Step:1 Training Started, 5 Steps to go : ETA : 30 minutes"
    assert seen[2].endswith(" /n Step:2 Training Done, 4 Steps to go : ETA : 15 minutes")
    assert seen[-1] == DOCS_MODEL_READY_DATA
    advanced = await http.post(f"{running.url}/_sim/trainings/{training_id}/advance")
    assert advanced.status_code == 404


async def test_sandbox_prefix_is_an_alias(running, host, http):
    body = page_body(host, count=1)
    response = await http.post(f"{running.url}/api/sandbox/v3/lora_fine_tune", json=body)
    training_id = response.json()["training_id"]
    response = await http.post(f"{running.url}/api/sandbox/v3/fine_tune_status/{training_id}", json={"key": KEY})
    assert response.json()["status"] == "success"


# -- keys and validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"instance_prompt": "x"},
        {"key": ""},
        {"key": None},
        {"key": 123},
        [1, 2],
    ],
)
async def test_missing_or_bad_key_answers_invalid_api_key(running, http, body):
    for path in ("lora_fine_tune", "fine_tune_status/abc", "finetune_list", "cancle_training/abc", "base64_crop"):
        response = await post(http, running, path, body)
        assert response.status_code == 200
        data = response.json()
        assert data["status"] == "error"
        assert data["message"] == "Invalid Api Key"
        assert "Content-Type: application/json" in data["tip"]


async def test_body_that_is_not_json_is_an_invalid_key(running, http):
    for content, headers in [
        (b"key=abc", {"Content-Type": "application/x-www-form-urlencoded"}),
        (json.dumps({"key": KEY}).encode(), {"Content-Type": "text/plain"}),
        (b"{not json", {"Content-Type": "application/json"}),
    ]:
        response = await http.post(f"{running.url}/api/v3/finetune_list", content=content, headers=headers)
        assert response.json()["message"] == "Invalid Api Key"


async def test_configured_key_is_the_only_valid_one(http):
    async with await start_simulator(step_seconds=STEP, api_key="the-only-key") as sim:
        bad = await http.post(f"{sim.url}/api/v3/finetune_list", json={"key": "another-key"})
        assert bad.json()["message"] == "Invalid Api Key"
        sim.simulator.set_faults(error_http_status=True)
        bad = await http.post(f"{sim.url}/api/v3/finetune_list", json={"key": "another-key"})
        assert bad.status_code == 401 and bad.json()["message"] == "Invalid Api Key"
        good = await http.post(f"{sim.url}/api/v3/finetune_list", json={"key": "the-only-key"})
        assert good.json() == {"status": "success", "messege": "model list", "data": []}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"instance_prompt": None}, "instance_prompt", "The instance prompt field is required."),
        ({"instance_prompt": ""}, "instance_prompt", "The instance prompt field is required."),
        ({"class_prompt": 5}, "class_prompt", "The class prompt must be a string."),
        ({"images": []}, "images", "The images field is required."),
        ({"images": "https://x.test/1.png"}, "images", "The images must be an array."),
        ({"images": ["not a url"]}, "images.0", "The images.0 must be a valid URL."),
        ({"training_type": "robot"}, "training_type", "The selected training type is invalid."),
        ({"base_model_type": "flux"}, "base_model_type", "The selected base model type is invalid."),
        ({"lora_type": "dora"}, "lora_type", "The selected lora type is invalid."),
        ({"max_train_steps": "abc"}, "max_train_steps", "The max train steps must be a number."),
        ({"max_train_steps": "2.5"}, "max_train_steps", "The max train steps must be an integer."),
        ({"max_train_steps": "0"}, "max_train_steps", "The max train steps must be between 1 and 2000."),
        ({"max_train_steps": "2001"}, "max_train_steps", "The max train steps must be between 1 and 2000."),
        ({"max_train_steps": None}, "max_train_steps", "The max train steps field is required."),
        ({"seed": "lucky"}, "seed", "The seed must be an integer."),
        ({"webhook": "ftp://example.test/hook"}, "webhook", "The webhook must be a valid URL."),
    ],
)
async def test_validation_errors_use_the_provider_shape(running, http, change, field, message):
    body = json.loads(LORA_PAGE_BODY) | {"key": KEY} | change
    response = await post(http, running, "lora_fine_tune", body)
    assert response.status_code == 200
    assert response.json() == {"status": "error", "messege": {field: [message]}}
    assert running.simulator.trainings == {}


async def test_missing_training_type_and_several_errors_at_once(running, http):
    body = {"key": KEY, "images": ["nope"], "max_train_steps": "2"}
    data = (await post(http, running, "lora_fine_tune", body)).json()
    assert data["status"] == "error"
    assert set(data["messege"]) == {"instance_prompt", "class_prompt", "images.0", "training_type"}
    assert data["messege"]["training_type"] == ["The training type field is required."]


async def test_validation_error_is_400_when_http_codes_are_on(running, http):
    running.simulator.faults.error_http_status = True
    response = await post(http, running, "lora_fine_tune", {"key": KEY})
    assert response.status_code == 400
    assert response.json()["status"] == "error"


@pytest.mark.parametrize("training_type", ["men", "female", "women", "femal", "couple", "null", None])
async def test_every_documented_training_type_is_accepted(running, host, http, training_type):
    body = page_body(host, count=1) | {"training_type": training_type}
    await submit(http, running, body)


async def test_tolerated_deviations_are_recorded(running, host, http):
    body = page_body(host, count=1) | {"max_train_steps": 10, "seed": None, "base_model_type": "normal"}
    body.pop("lora_type")
    training_id = await submit(http, running, body)
    training = running.simulator.trainings[training_id]
    assert training.warnings == ["max_train_steps was sent as int, the docs send a string"]
    assert training.request["max_train_steps"] == 10


# -- image fetching -----------------------------------------------------------------------------


async def test_unreachable_image_is_rejected_with_its_position(running, host, http):
    body = page_body(host, count=3)
    body["images"][2] = host.missing_url()
    data = (await post(http, running, "lora_fine_tune", body)).json()
    assert data == {"status": "error", "messege": "Image 3 could not be downloaded: HTTP 404"}
    assert running.simulator.trainings == {}


async def test_image_on_a_closed_port_is_rejected(running, host, http):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    body = page_body(host, count=2)
    body["images"][0] = f"http://127.0.0.1:{closed_port}/attachments/1/2/a.png"
    data = (await post(http, running, "lora_fine_tune", body)).json()
    assert data["status"] == "error"
    assert data["messege"].startswith("Image 1 could not be downloaded: ")


async def test_undecodable_image_is_rejected(running, host, http):
    body = page_body(host, count=2)
    body["images"][1] = host.add("2.png", b"\x89PNG\r\n\x1a\n this is not really a png", "image/png")
    data = (await post(http, running, "lora_fine_tune", body)).json()
    assert data["status"] == "error"
    assert data["messege"].startswith("Image 2 could not be decoded")
    running.simulator.faults.error_http_status = True
    response = await post(http, running, "lora_fine_tune", body)
    assert response.status_code == 400


async def test_image_details_are_recorded(running, host, http):
    body = page_body(host, count=1)
    body["images"].append(host.add("wide.jpg", jpeg_bytes(640, 480), "image/jpeg"))
    training_id = await submit(http, running, body)
    images = running.simulator.trainings[training_id].images
    assert [(i.format, i.width, i.height, i.content_type) for i in images] == [
        ("PNG", 512, 512, "image/png"),
        ("JPEG", 640, 480, "image/jpeg"),
    ]
    assert images[0].byte_size == len(png_bytes())


# -- cancel, list, delete -----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["cancle_training", "cancel_training"])
async def test_cancel_stops_the_walk_and_reads_training_success(running, host, hooks, http, spelling):
    running.simulator.step_seconds = 60
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await hooks.wait_for(1)

    response = await post(http, running, f"{spelling}/{training_id}", {"key": KEY})

    assert response.json() == {"status": "success", "messege": "Training cancelled successfully", "data": ""}
    status = await status_of(http, running, training_id)
    assert status["messege"] == "training_success"
    running.simulator.step_seconds = STEP
    await asyncio.sleep(STEP * 5)
    assert hooks.statuses == ["deploying_gpu"]
    again = (await post(http, running, f"{spelling}/{training_id}", {"key": KEY})).json()
    assert again == {"status": "error", "messege": "Training has already finished."}
    unknown = (await post(http, running, f"{spelling}/NoSuchId00", {"key": KEY})).json()
    assert unknown == {"status": "error", "messege": "Training ID does not exist"}


async def test_cancel_of_a_finished_run_is_an_error(running, host, http):
    training_id = await submit(http, running, page_body(host, count=1))
    await running.simulator.wait_for_status(training_id, "model_ready")
    data = (await post(http, running, f"cancle_training/{training_id}", {"key": KEY})).json()
    assert data == {"status": "error", "messege": "Training has already finished."}
    running.simulator.faults.error_http_status = True
    response = await post(http, running, f"cancle_training/{training_id}", {"key": KEY})
    assert response.status_code == 400


async def test_list_and_delete(running, host, http):
    first = await submit(http, running, page_body(host, count=1))
    second = await submit(http, running, page_body(host, count=1))

    listed = (await post(http, running, "finetune_list", {"key": KEY})).json()
    assert listed == {"status": "success", "messege": "model list", "data": [first, second]}
    other = (await post(http, running, "finetune_list", {"key": "someone-else"})).json()
    assert other["data"] == []

    deleted = (await post(http, running, f"finetune/delete/{first}", {"key": KEY})).json()
    assert deleted == {"status": "success", "messege": "Model deleted successfully", "data": ""}
    listed = (await post(http, running, "finetune_list", {"key": KEY})).json()
    assert listed["data"] == [second]
    gone = await status_of(http, running, first)
    assert gone == {"status": "error", "messege": "Training ID does not exist"}
    again = (await post(http, running, f"finetune/delete/{first}", {"key": KEY})).json()
    assert again == {"status": "error", "messege": "Training ID does not exist"}


async def test_unknown_id_is_404_when_http_codes_are_on(running, http):
    running.simulator.set_faults(error_http_status=True)
    for path in ("fine_tune_status/Nope", "cancle_training/Nope", "finetune/delete/Nope"):
        response = await post(http, running, path, {"key": KEY})
        assert response.status_code == 404
        assert response.json() == {"status": "error", "messege": "Training ID does not exist"}


async def test_another_keys_training_does_not_exist(running, host, http):
    training_id = await submit(http, running, page_body(host, count=1))
    status = await status_of(http, running, training_id, key="someone-else")
    assert status["messege"] == "Training ID does not exist"


# -- base64_crop --------------------------------------------------------------------------------


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def test_base64_crop_returns_a_served_512_link(running, host, http):
    body = {"key": KEY, "image": data_uri(jpeg_bytes(800, 600), "image/jpeg"), "crop": "true"}
    data = (await post(http, running, "base64_crop", body)).json()
    assert set(data) == {"status", "messege", "link"}
    assert data["status"] == "success" and data["messege"] == "image uploaded"
    assert re.fullmatch(re.escape(running.url) + r"/generations/\d{19}\.png", data["link"])

    served = await http.get(data["link"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.size == (512, 512)

    # The link is a valid training image.
    training_id = await submit(http, running, page_body(host, count=1) | {"images": [data["link"]]})
    assert running.simulator.trainings[training_id].images[0].width == 512


async def test_base64_crop_false_keeps_the_size(running, http):
    body = {"key": KEY, "image": data_uri(png_bytes(300, 200), "image/png"), "crop": "false"}
    link = (await post(http, running, "base64_crop", body)).json()["link"]
    with Image.open(io.BytesIO((await http.get(link)).content)) as image:
        assert image.size == (300, 200)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {"image": ["The image field is required."]}),
        ({"image": "data:image/png;base64,@@@@"}, "The image is not valid base64."),
        ({"image": "data:image/png;base64," + base64.b64encode(b"hello").decode()}, "The image could not be decoded."),
        (
            {"image": data_uri(png_bytes(8, 8), "image/png"), "crop": "maybe"},
            {"crop": ["The selected crop is invalid."]},
        ),
        ({"image": data_uri(b"\0" * (5 * 1024 * 1024 + 1), "image/png")}, "The image may not be greater than 5 MB."),
    ],
)
async def test_base64_crop_errors(running, http, body, expected):
    data = (await post(http, running, "base64_crop", {"key": KEY} | body)).json()
    assert data == {"status": "error", "messege": expected}


async def test_unknown_generation_is_404(running, http):
    assert (await http.get(f"{running.url}/generations/123.png")).status_code == 404


# -- fault switches -----------------------------------------------------------------------------


async def test_fail_submission_answers_failed_then_recovers(running, host, http):
    running.simulator.set_faults(fail_submission=2)
    body = page_body(host, count=1)
    for _ in range(2):
        response = await post(http, running, "lora_fine_tune", body)
        assert response.status_code == 200
        assert response.json() == {"status": "failed", "id": "", "message": "Failed, Try Again", "output": ""}
    assert running.simulator.trainings == {}
    await submit(http, running, body)
    assert running.simulator.faults.fail_submission == 0


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("invalid_key", 401, {"status": "error", "message": "Invalid Api Key"}),
        (
            "insufficient_credits",
            402,
            {"status": "error", "message": "Insufficient credits. Please add more credits to continue."},
        ),
        (
            "rate_limited",
            429,
            {
                "status": "error",
                "message": "Rate limit exceeded. Maximum 5 queued requests allowed.",
                "retry_after": 30,
            },
        ),
        (
            "queue_full",
            429,
            {
                "status": "error",
                "message": "Rate limit exceeded. Maximum 5 queued requests allowed.",
                "retry_after": 30,
            },
        ),
        (
            "spam_filter",
            429,
            {
                "status": "error",
                "message": "Rate limit exceeded",
                "tips": (
                    "you are sending same request multiple times, spam filter is enabled, "
                    "please wait for 30 seconds and try again"
                ),
            },
        ),
        ("error", 400, {"status": "error", "messege": "GPU pool exhausted"}),
        ("failed", 400, {"status": "failed", "id": "", "message": "GPU pool exhausted", "output": ""}),
    ],
)
@pytest.mark.parametrize("http_codes", [False, True])
async def test_fail_submission_variants(running, host, http, kind, code, expected, http_codes):
    response = await http.post(
        f"{running.url}/_sim/faults",
        json={
            "fail_submission": 1,
            "fail_submission_kind": kind,
            "fail_submission_message": "GPU pool exhausted",
            "error_http_status": http_codes,
        },
    )
    assert response.status_code == 200
    response = await post(http, running, "lora_fine_tune", page_body(host, count=1))
    assert response.status_code == (code if http_codes else 200)
    data = response.json()
    assert {k: data[k] for k in expected} == expected
    assert running.simulator.trainings == {}


async def test_timeout_submission_creates_the_training_but_holds_the_answer(running, host, hooks, http):
    running.simulator.set_faults(timeout_submission=1, hold_seconds=3)
    body = page_body(host, webhook=hooks.url, count=1)

    with pytest.raises(httpx.ReadTimeout):
        await http.post(f"{running.url}/api/v3/lora_fine_tune", json=body, timeout=0.5)

    [training] = running.simulator.trainings.values()
    assert training.submission_held
    received = await hooks.wait_for(8)
    assert received[0]["model_id"] == training.training_id
    assert (await status_of(http, running, training.training_id))["messege"] == "model_ready"
    listed = (await post(http, running, "finetune_list", {"key": KEY})).json()
    assert listed["data"] == [training.training_id]
    # Only one submission was used up: the next one answers at once.
    await submit(http, running, page_body(host, count=1))


async def test_held_answer_is_released_on_shutdown(host, http):
    sim = await start_simulator(step_seconds=STEP)
    sim.simulator.set_faults(timeout_submission=1, hold_seconds=60)
    request = asyncio.create_task(http.post(f"{sim.url}/api/v3/lora_fine_tune", json=page_body(host, count=1)))
    await sim.simulator.wait_for(lambda: bool(sim.simulator.trainings))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sim.close()
    assert loop.time() - started < 3
    # The held answer went out (or the connection closed) instead of waiting 60 s.
    with contextlib.suppress(httpx.HTTPError):
        response = await asyncio.wait_for(request, 3)
        assert response.json()["status"] == "success"


async def test_drop_all_webhooks(running, host, hooks, http):
    running.simulator.set_faults(drop_webhooks=True)
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    training = await running.simulator.wait_until_settled(training_id)
    assert hooks.received == []
    assert [d.training_status for d in training.deliveries if d.dropped] == list(STATUSES)
    assert (await status_of(http, running, training_id))["messege"] == "model_ready"


async def test_drop_some_status_words_over_http(running, host, hooks, http):
    response = await http.post(
        f"{running.url}/_sim/faults", json={"drop_webhooks": ["training_started", "model_ready"]}
    )
    assert response.json()["faults"]["drop_webhooks"] == ["model_ready", "training_started"]
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == [s for s in STATUSES if s not in {"training_started", "model_ready"}]


async def test_drop_with_a_seeded_probability_is_reproducible(running, host, hooks, http):
    running.simulator.set_faults(drop_webhooks=0.5, drop_seed=7)
    rng = random.Random(7)
    expected = [s for s in STATUSES if not rng.random() < 0.5]
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == expected
    assert 0 < len(expected) < len(STATUSES)


async def test_duplicate_webhooks(running, host, hooks, http):
    running.simulator.set_faults(duplicate_webhooks=3)
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == [s for s in STATUSES for _ in range(3)]
    copies = [d.copy for d in running.simulator.trainings[training_id].deliveries]
    assert copies == [1, 2, 3] * 8


async def test_reorder_swap_pairs(running, host, hooks, http):
    running.simulator.set_faults(reorder_webhooks="swap_pairs")
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    s = STATUSES
    assert hooks.statuses == [s[1], s[0], s[3], s[2], s[5], s[4], s[7], s[6]]
    assert (await status_of(http, running, training_id))["messege"] == "model_ready"


async def test_reorder_reverse_sends_everything_backwards_at_the_end(running, host, hooks, http):
    running.simulator.set_faults(reorder_webhooks="reverse")
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == list(reversed(STATUSES))


async def test_fail_training_sends_a_failed_webhook_and_status(running, host, hooks, http):
    running.simulator.set_faults(fail_training=1, fail_training_at="training_success", fail_training_reason="OOM")
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.bodies == [
        {
            "status": "success",
            "training_status": "deploying_gpu",
            "logs": "it will take upto 25 minutes",
            "model_id": training_id,
        },
        {
            "status": "success",
            "training_status": "training_started",
            "logs": "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
            "model_id": training_id,
        },
        {"status": "failed", "training_status": "failed", "logs": "OOM", "model_id": training_id},
    ]
    assert await status_of(http, running, training_id) == {"status": "success", "messege": "failed", "data": "OOM"}
    cancel = (await post(http, running, f"cancle_training/{training_id}", {"key": KEY})).json()
    assert cancel["messege"] == "Training has already finished."
    # Only the next N trainings fail.
    second = await submit(http, running, page_body(host, count=1))
    await running.simulator.wait_for_status(second, "model_ready")


async def test_stall_training_stops_moving_until_advanced(running, host, http):
    running.simulator.set_faults(stall_training=1, stall_at="training_started")
    training_id = await submit(http, running, page_body(host, count=1))
    await running.simulator.wait_for_status(training_id, "training_started")
    await asyncio.sleep(STEP * 6)
    assert (await status_of(http, running, training_id))["messege"] == "training_started"
    assert running.simulator.advance(training_id)
    await running.simulator.wait_for_status(training_id, "model_ready")


@pytest.mark.parametrize(
    ("mode", "code", "content_type"),
    [("500", 500, "application/json"), ("503", 503, "application/json"), ("502", 502, "text/html")],
)
async def test_status_errors(running, host, http, mode, code, content_type):
    training_id = await submit(http, running, page_body(host, count=1))
    running.simulator.set_faults(status_errors=2, status_error_mode=mode)
    for _ in range(2):
        response = await post(http, running, f"fine_tune_status/{training_id}", {"key": KEY})
        assert response.status_code == code
        assert response.headers["content-type"].startswith(content_type)
    assert (await status_of(http, running, training_id))["status"] == "success"
    outcomes = [r.http_status for r in running.simulator.requests if r.endpoint == "fine_tune_status"]
    assert outcomes == [code, code, 200]


async def test_status_hang_outlasts_the_client_timeout(running, host, http):
    training_id = await submit(http, running, page_body(host, count=1))
    running.simulator.set_faults(status_errors=1, status_error_mode="hang", status_hang_seconds=1.0)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(f"{running.url}/api/v3/fine_tune_status/{training_id}", json={"key": KEY}, timeout=0.2)
    assert (await status_of(http, running, training_id))["status"] == "success"


async def test_unknown_status_word_is_one_extra_step(running, host, hooks, http):
    running.simulator.set_faults(unknown_status_word="queued_for_gpu")
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == [STATUSES[0], "queued_for_gpu", *STATUSES[1:]]
    history = [h.status for h in running.simulator.trainings[training_id].history]
    assert history == hooks.statuses


async def test_unknown_status_word_shows_in_status(running, host, http):
    running.simulator.step_seconds = 60
    running.simulator.set_faults(unknown_status_word="queued_for_gpu")
    training_id = await submit(http, running, page_body(host, count=1))
    running.simulator.advance(training_id)
    await running.simulator.wait_for_status(training_id, "queued_for_gpu")
    assert (await status_of(http, running, training_id))["messege"] == "queued_for_gpu"


async def test_step_seconds_can_change_at_runtime(running, host, http):
    running.simulator.step_seconds = 60
    training_id = await submit(http, running, page_body(host, count=1))
    await asyncio.sleep(STEP * 4)
    assert running.simulator.trainings[training_id].status == "deploying_gpu"
    response = await http.post(f"{running.url}/_sim/faults", json={"step_seconds": 0.01})
    assert response.json()["step_seconds"] == 0.01
    await running.simulator.wait_for_status(training_id, "model_ready", within=2)


async def test_webhook_failures_are_recorded_and_retried_only_when_asked(running, host, http):
    async with WebhookRecorder(status_code=500) as failing:
        training_id = await submit(http, running, page_body(host, webhook=failing.url, count=1))
        training = await running.simulator.wait_until_settled(training_id)
        assert [(d.http_status, d.attempt) for d in training.deliveries] == [(500, 1)] * 8
        assert len(failing.received) == 8

        running.simulator.set_faults(webhook_retries=2, webhook_retry_delay=0.0)
        training_id = await submit(http, running, page_body(host, webhook=failing.url, count=1))
        training = await running.simulator.wait_until_settled(training_id)
        assert [d.attempt for d in training.deliveries] == [1, 2, 3] * 8


async def test_webhook_to_a_dead_receiver_records_the_error(running, host, http):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    training_id = await submit(http, running, page_body(host, webhook=f"http://127.0.0.1:{port}/hook", count=1))
    training = await running.simulator.wait_until_settled(training_id)
    assert len(training.deliveries) == 8
    assert all(d.http_status is None and d.error for d in training.deliveries)


# -- control endpoints --------------------------------------------------------------------------


async def test_control_endpoints(running, host, hooks, http):
    bad = await http.post(f"{running.url}/_sim/faults", json={"no_such_switch": 1})
    assert bad.status_code == 400 and "no_such_switch" in bad.json()["error"]
    bad = await http.post(f"{running.url}/_sim/faults", json={"fail_submission": "three"})
    assert bad.status_code == 400
    bad = await http.post(f"{running.url}/_sim/faults", json={"reorder_webhooks": "sideways"})
    assert bad.status_code == 400
    assert running.simulator.faults.reorder_webhooks == "none"

    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=2))
    await running.simulator.wait_until_settled(training_id)
    state = (await http.get(f"{running.url}/_sim/state")).json()
    [training] = state["trainings"]
    assert training["training_id"] == training_id
    assert training["status"] == "model_ready"
    assert [i["width"] for i in training["images"]] == [512, 512]
    assert [h["status"] for h in training["history"]] == list(STATUSES)
    assert [w["training_status"] for w in training["webhooks"]] == list(STATUSES)
    assert all(w["http_status"] == 200 for w in training["webhooks"])
    assert [r["endpoint"] for r in state["requests"]] == ["lora_fine_tune"]
    assert state["requests"][0]["training_id"] == training_id
    assert KEY not in json.dumps(state)

    faults = (await http.get(f"{running.url}/_sim/faults")).json()
    assert faults["faults"]["fail_submission"] == 0 and faults["step_seconds"] == STEP

    await http.post(f"{running.url}/_sim/faults", json={"fail_submission": 3, "step_seconds": 1})
    reset = (await http.post(f"{running.url}/_sim/reset")).json()
    assert reset["faults"]["fail_submission"] == 0 and reset["step_seconds"] == STEP
    state = (await http.get(f"{running.url}/_sim/state")).json()
    assert state["trainings"] == [] and state["requests"] == []


def test_set_faults_in_python_is_checked():
    from bot.simulator import Simulator

    sim = Simulator(SimulatorConfig())
    with pytest.raises(FaultError):
        sim.set_faults(fail_training_at="not_a_status")
    with pytest.raises(FaultError):
        sim.set_faults(unknown_status_word="model_ready")
    with pytest.raises(FaultError):
        sim.set_faults(drop_webhooks=1.5)
    sim.set_faults(duplicate_webhooks=True, reorder_webhooks=True, status_error_mode=503)
    assert (sim.faults.duplicate_webhooks, sim.faults.reorder_webhooks) == (2, "swap_pairs")
    assert sim.faults.status_error_mode == "503"


async def test_logs_never_contain_the_api_key(host, hooks, http, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "very-secret-provider-key-123"
    async with await start_simulator(step_seconds=STEP, api_key=secret) as sim:
        body = page_body(host, webhook=hooks.url, count=2, key=secret)
        training_id = await submit(http, sim, body)
        await sim.simulator.wait_until_settled(training_id)
        await post(http, sim, f"fine_tune_status/{training_id}", {"key": secret})
        await post(http, sim, "lora_fine_tune", body | {"images": [host.missing_url()]})
        await post(http, sim, "finetune_list", {"key": secret + "-wrong"})
        sim.simulator.set_faults(fail_submission=1)
        await post(http, sim, "lora_fine_tune", body)
    assert caplog.records
    assert secret not in caplog.text


async def test_serve_in_a_subprocess_is_driven_over_http_and_stops_on_sigterm(http):
    secret = "subprocess-key-31337"
    code = f"from bot.simulator import serve; serve('127.0.0.1', 0, 0.02, {secret!r})"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        url = await served_url(proc, output)

        set_faults = await http.post(f"{url}/_sim/faults", json={"fail_submission": 1, "error_http_status": True})
        assert set_faults.json()["faults"]["fail_submission"] == 1
        listed = await http.post(f"{url}/api/v3/finetune_list", json={"key": secret})
        assert listed.json() == {"status": "success", "messege": "model list", "data": []}
        wrong = await http.post(f"{url}/api/v3/finetune_list", json={"key": "nope"})
        assert wrong.status_code == 401
        state = (await http.get(f"{url}/_sim/state")).json()
        assert [r["http_status"] for r in state["requests"]] == [200, 401]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 20)
        output.append(rest.decode())
    assert proc.returncode == 0, "".join(output)
    assert secret not in "".join(output)


async def test_unknown_status_word_after_model_ready_is_a_late_step(running, host, hooks, http):
    running.simulator.set_faults(unknown_status_word="model_archived", unknown_status_after="model_ready")
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == [*STATUSES, "model_archived"]
    assert (await status_of(http, running, training_id))["messege"] == "model_archived"
