"""The simulator's v6 image generation (`images/text2img`, `images/fetch`), over real loopback HTTP.

A LoRA trained on the simulator (a quick walk to `model_ready`) is used as `lora_model`; the
answers, the pictures and their expiry, and the `t2i_*` / `fetch_forms` / `image_ttl_seconds`
switches are checked with raw httpx. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.simulator import FaultError, Simulator, SimulatorConfig, parse_fault_assignments
from tests.provider.test_simulator import KEY, page_body, post, submit

OTHER_KEY = "sim-test-other-key-77"
QUEUE_FULL = {
    "status": "error",
    "message": "Rate limit exceeded. Maximum 5 queued requests allowed.",
    "retry_after": 30,
}
SPAM_FILTER = {
    "status": "error",
    "message": "Rate limit exceeded",
    "tips": (
        "you are sending same request multiple times, spam filter is enabled, please wait for 30 seconds and try again"
    ),
}
INVALID_KEY_MESSAGE = "Invalid Api Key"
NOT_FOUND = {"status": "error", "message": "Request not found"}
PROCESSING_KEYS = {"status", "tip", "eta", "message", "fetch_result", "id", "output", "future_links", "meta"}
SUCCESS_KEYS = {"status", "generationTime", "id", "output", "proxy_links", "nsfw_content_detected", "meta"}


@pytest.fixture
async def lora(running, host, http) -> str:
    """A LoRA of KEY that reached model_ready."""
    return await trained_lora(running, host, http)


async def trained_lora(running, host, http, key: str = KEY) -> str:
    training_id = await submit(http, running, page_body(host, count=1, key=key))
    await running.simulator.wait_for_status(training_id, "model_ready")
    return training_id


def t2i_body(lora: str | None, key: str = KEY, **overrides: Any) -> dict[str, Any]:
    """The docs' v6 text2img example with our key and LoRA (numbers as strings, as the docs send)."""
    body: dict[str, Any] = {
        "key": key,
        "model_id": "tamarin-xl-v1",
        "prompt": "a portrait photo of sks person, studio light",
        "negative_prompt": "blurry",
        "width": "512",
        "height": "512",
        "samples": "1",
        "num_inference_steps": "31",
        "safety_checker": "no",
        "seed": None,
        "guidance_scale": 7.5,
        "lora_strength": "0.45",
        "lora_model": lora,
        "scheduler": "UniPCMultistepScheduler",
        "webhook": None,
        "track_id": None,
    }
    body.update(overrides)
    return body


async def set_faults(http: httpx.AsyncClient, running, **faults: Any) -> dict[str, Any]:
    """Set switches the way another process would: `POST /_sim/faults`."""
    response = await http.post(f"{running.url}/_sim/faults", json=faults)
    assert response.status_code == 200, response.text
    return dict(response.json()["faults"])


async def text2img(http, running, body: Any, prefix: str = "/api/v6", **kwargs: Any) -> httpx.Response:
    return await http.post(f"{running.url}{prefix}/images/text2img", json=body, **kwargs)


async def fetch_body(http, running, request_id: Any, key: str = KEY, prefix: str = "/api/v6") -> httpx.Response:
    return await http.post(f"{running.url}{prefix}/images/fetch", json={"key": key, "request_id": request_id})


async def fetch_path(http, running, request_id: Any, key: str = KEY, prefix: str = "/api/v6") -> httpx.Response:
    return await http.post(f"{running.url}{prefix}/images/fetch/{request_id}", json={"key": key})


async def generate(http, running, body: dict[str, Any]) -> dict[str, Any]:
    response = await text2img(http, running, body)
    assert response.status_code == 200, response.text
    data = dict(response.json())
    assert data["status"] in ("processing", "success"), data
    return data


def png_size(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format, image.size


# -- the walk: processing, fetches, success -------------------------------------------------------


async def test_processing_then_success_through_both_fetch_forms(running, http, lora):
    faults = await set_faults(http, running, t2i_processing_steps=3, t2i_eta=7.5)
    assert (faults["t2i_processing_steps"], faults["t2i_eta"]) == (3, 7.5)

    first = await generate(http, running, t2i_body(lora))
    assert set(first) == PROCESSING_KEYS
    assert first["status"] == "processing"
    assert first["message"] == "Try to fetch request after given estimated time"
    assert first["eta"] == 7.5 and first["output"] == []
    generation_id = first["id"]
    assert isinstance(generation_id, int)
    assert first["fetch_result"] == f"{running.url}/api/v6/images/fetch/{generation_id}"
    [link] = first["future_links"]
    assert link.startswith(f"{running.url}/generations/img/") and link.endswith(".png")
    meta = first["meta"]
    assert (meta["W"], meta["H"], meta["lora"], meta["lora_strength"]) == (512, 512, lora, 0.45)
    assert meta["prompt"] == "a portrait photo of sks person, studio light"
    assert isinstance(meta["seed"], int)
    # Not drawn yet: the future link does not answer.
    assert (await http.get(link)).status_code == 404

    # The docs' body form (request_id as a string), then the SDK's path form via fetch_result.
    second = (await fetch_body(http, running, str(generation_id))).json()
    assert second["status"] == "processing" and second["id"] == generation_id
    third = (await http.post(first["fetch_result"], json={"key": KEY})).json()
    assert third["status"] == "processing" and third["future_links"] == [link]
    done = (await fetch_body(http, running, generation_id)).json()
    assert set(done) == SUCCESS_KEYS
    assert done["status"] == "success" and done["id"] == generation_id
    assert done["output"] == [link] and done["proxy_links"] == [link]
    assert done["nsfw_content_detected"] is False
    assert done["meta"]["seed"] == meta["seed"]
    assert isinstance(done["generationTime"], (int, float))
    # Finished: every later fetch answers the same success, in both forms.
    assert (await fetch_path(http, running, generation_id)).json()["output"] == [link]

    picture = await http.get(link)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert png_size(picture.content) == ("PNG", (512, 512))

    generation = await running.simulator.wait_for_generation(generation_id, "success", within=1)
    assert generation.fetch_count == 4 and generation.processing_left == 0
    assert generation.request == {k: v for k, v in t2i_body(lora).items() if k != "key"}
    records = [
        (r.endpoint, r.request_id, r.http_status) for r in running.simulator.requests if r.endpoint != "lora_fine_tune"
    ]
    assert records == [
        ("text2img", str(generation_id), 200),
        ("image_download", str(generation_id), 404),
        ("images_fetch", str(generation_id), 200),
        ("images_fetch", str(generation_id), 200),
        ("images_fetch", str(generation_id), 200),
        ("images_fetch", str(generation_id), 200),
        ("image_download", str(generation_id), 200),
    ]
    state = (await http.get(f"{running.url}/_sim/state")).json()
    [observed] = state["generations_v6"]
    assert observed["id"] == generation_id and observed["status"] == "success" and observed["fetch_count"] == 4
    assert KEY not in json.dumps(state)


async def test_success_at_once_with_no_processing_steps(running, http, lora):
    await set_faults(http, running, t2i_processing_steps=0)
    data = await generate(http, running, t2i_body(lora, seed=1234, lora_strength=1))
    assert set(data) == SUCCESS_KEYS and data["status"] == "success"
    assert data["meta"]["seed"] == 1234 and data["meta"]["lora_strength"] == 1
    [link] = data["output"]
    assert (await http.get(link)).status_code == 200
    generation = running.simulator.generations_v6[data["id"]]
    assert generation.status == "success" and generation.fetch_count == 0 and generation.finished_at is not None
    # Ids increase by one.
    assert (await generate(http, running, t2i_body(lora, seed=1)))["id"] == data["id"] + 1


async def test_pictures_have_the_requested_size_and_count_and_differ(running, http, lora):
    running.simulator.set_faults(t2i_processing_steps=0)
    data = await generate(http, running, t2i_body(lora, width="320", height=192, samples="3", seed=77))
    assert len(data["output"]) == 3 and data["meta"]["W"] == 320 and data["meta"]["H"] == 192
    pictures = [(await http.get(url)).content for url in data["output"]]
    assert [png_size(p) for p in pictures] == [("PNG", (320, 192))] * 3
    assert len(set(pictures)) == 3
    # The same seed draws the same pictures; another seed others.
    again = await generate(http, running, t2i_body(lora, width="320", height=192, samples="3", seed=77))
    assert [(await http.get(url)).content for url in again["output"]] == pictures
    other = await generate(http, running, t2i_body(lora, width="320", height=192, samples=1, seed=78))
    assert (await http.get(other["output"][0])).content not in pictures
    # The largest documented request works too.
    big = await generate(http, running, t2i_body(lora, width=1024, height="1024", samples=4))
    assert len(big["output"]) == 4
    assert png_size((await http.get(big["output"][3])).content) == ("PNG", (1024, 1024))


# -- expiry ---------------------------------------------------------------------------------------


async def test_links_expire_after_the_ttl(running, http, lora):
    await set_faults(http, running, t2i_processing_steps=0, image_ttl_seconds=0.3)
    data = await generate(http, running, t2i_body(lora, samples=2))
    generation = running.simulator.generations_v6[data["id"]]
    assert [(await http.get(url)).status_code for url in data["output"]] == [200, 200]
    assert len(generation.images) == 2
    # Dropped by the simulator's own timer, without anyone asking.
    await running.simulator.wait_for(lambda: generation.expired, within=3)
    assert generation.images == {}
    assert [(await http.get(url)).status_code for url in data["output"]] == [404, 404]
    # The provider still reports the (dead) links.
    assert (await fetch_path(http, running, data["id"])).json()["output"] == data["output"]


async def test_a_shorter_ttl_applies_to_finished_generations(running, http, lora):
    running.simulator.set_faults(t2i_processing_steps=0)
    data = await generate(http, running, t2i_body(lora))
    [link] = data["output"]
    assert (await http.get(link)).status_code == 200
    await set_faults(http, running, image_ttl_seconds=0.05)
    await running.simulator.wait_for(lambda: running.simulator.generations_v6[data["id"]].expired, within=3)
    assert (await http.get(link)).status_code == 404


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("http_codes", [False, True])
async def test_model_not_found_for_unknown_unready_deleted_and_another_keys_lora(running, host, http, lora, http_codes):
    others = await trained_lora(running, host, http, key=OTHER_KEY)
    gone = await trained_lora(running, host, http)
    assert (await post(http, running, f"finetune/delete/{gone}", {"key": KEY})).json()["status"] == "success"
    running.simulator.step_seconds = 60
    walking = await submit(http, running, page_body(host, count=1))
    running.simulator.set_faults(error_http_status=http_codes)

    for name in ("noSuchLoRA", walking, others, gone):
        response = await text2img(http, running, t2i_body(name))
        assert response.status_code == (400 if http_codes else 200)
        assert response.json() == {"status": "error", "message": f"Model not found: {name}"}
    # A list needs every LoRA ready; the first bad one is named.
    response = await text2img(http, running, t2i_body(f"{lora},{walking}", lora_strength="0.5,0.7"))
    assert response.json() == {"status": "error", "message": f"Model not found: {walking}"}
    assert running.simulator.generations_v6 == {}
    # The other key can use its own LoRA, and a list of ready LoRAs is accepted.
    assert (await generate(http, running, t2i_body(others, key=OTHER_KEY)))["meta"]["lora"] == others
    pair = await generate(http, running, t2i_body(f"{lora}, {lora}", lora_strength="0.5,0.7"))
    assert (pair["meta"]["lora"], pair["meta"]["lora_strength"]) == (f"{lora}, {lora}", "0.5,0.7")


async def test_without_a_lora_the_base_model_generates(running, http):
    data = await generate(http, running, t2i_body(None, lora_strength=None))
    assert data["meta"]["lora"] is None


@pytest.mark.parametrize("http_codes", [False, True])
async def test_validation_errors_in_both_shapes(running, http, lora, http_codes):
    running.simulator.set_faults(error_http_status=http_codes)
    missing_prompt = await text2img(http, running, t2i_body(lora, prompt=None))
    assert missing_prompt.status_code == (400 if http_codes else 200)
    assert missing_prompt.json() == {"status": "error", "message": {"prompt": ["The prompt field is required."]}}

    bad = t2i_body(lora, model_id="", width="2048", samples=5, lora_strength="1.5", safety_checker="maybe", seed="x")
    assert (await text2img(http, running, bad)).json() == {
        "status": "error",
        "message": {
            "model_id": ["The model id field is required."],
            "width": ["The width must not be greater than 1024."],
            "samples": ["The samples must not be greater than 4."],
            "lora_strength": ["The lora strength must be between 0.1 and 1."],
            "safety_checker": ["The selected safety checker is invalid."],
            "seed": ["The seed must be an integer."],
        },
    }

    await set_faults(http, running, validation_error_shape="string")
    assert (await text2img(http, running, t2i_body(lora, prompt=""))).json() == {
        "status": "error",
        "message": "The prompt field is required.",
    }
    assert (await text2img(http, running, bad)).json() == {
        "status": "error",
        "message": "The model id field is required. (and 5 more errors)",
    }
    assert running.simulator.generations_v6 == {}
    # The body form of fetch wants its request_id.
    assert (await fetch_body(http, running, None)).json() == {
        "status": "error",
        "message": "The request id field is required.",
    }


async def test_invalid_key_creates_nothing(running, http, lora):
    running.simulator.set_faults(error_http_status=True)
    for body in (t2i_body(lora, key=""), t2i_body(lora, key=None)):
        response = await text2img(http, running, body)
        assert response.status_code == 401 and response.json()["message"] == INVALID_KEY_MESSAGE
    not_json = await http.post(f"{running.url}/api/v6/images/text2img", content=b"key=x")
    assert not_json.json()["message"] == INVALID_KEY_MESSAGE
    assert (await fetch_path(http, running, 1, key="")).status_code == 401
    assert running.simulator.generations_v6 == {}


MESSAGE = "GPU on fire"
FAIL_KINDS = [
    ("error_string", 400, {"status": "error", "message": MESSAGE}),
    ("error_object", 400, {"status": "error", "message": {"prompt": [MESSAGE]}}),
    ("failed", 400, {"status": "failed", "id": "", "message": MESSAGE, "output": ""}),
    ("queue_full", 429, QUEUE_FULL),
    ("spam_filter", 429, SPAM_FILTER),
    ("invalid_key", 401, None),
    (
        "insufficient_credits",
        402,
        {"status": "error", "message": "Insufficient credits. Please add more credits to continue."},
    ),
    ("model_not_found", 400, "lora"),
]


@pytest.mark.parametrize("http_codes", [False, True])
@pytest.mark.parametrize(("kind", "code", "expected"), FAIL_KINDS, ids=[k[0] for k in FAIL_KINDS])
async def test_each_t2i_fail_kind_creates_nothing(running, http, lora, kind, code, expected, http_codes):
    faults = await set_faults(
        http, running, t2i_fail=1, t2i_fail_kind=kind, t2i_fail_message=MESSAGE, error_http_status=http_codes
    )
    assert (faults["t2i_fail"], faults["t2i_fail_kind"]) == (1, kind)
    response = await text2img(http, running, t2i_body(lora))
    assert response.status_code == (code if http_codes else 200)
    data = response.json()
    if kind == "invalid_key":
        assert data["message"] == INVALID_KEY_MESSAGE and "tip" in data
    elif kind == "model_not_found":
        assert data == {"status": "error", "message": f"Model not found: {lora}"}
    else:
        assert data == expected
    assert running.simulator.generations_v6 == {}
    assert running.simulator.faults.t2i_fail == 0
    # Only the next call failed.
    assert (await generate(http, running, t2i_body(lora)))["status"] == "processing"


@pytest.mark.parametrize("steps", [0, 2])
async def test_fail_while_processing(running, http, lora, steps):
    await set_faults(
        http, running, t2i_processing_steps=steps, t2i_fail_processing=1, t2i_fail_processing_message="CUDA OOM"
    )
    response = await text2img(http, running, t2i_body(lora))
    answers = [response.json()]
    generation_id = answers[0]["id"]
    for _ in range(steps + 1):
        answers.append((await fetch_path(http, running, generation_id)).json())
    failed = {"status": "failed", "id": generation_id, "message": "CUDA OOM", "output": []}
    assert [a["status"] for a in answers[:steps]] == ["processing"] * steps
    assert answers[steps:] == [failed, failed]
    generation = await running.simulator.wait_for_generation(generation_id, "failed", within=1)
    assert generation.image_names and generation.images == {}
    assert (await http.get(f"{running.url}/generations/img/{generation.image_names[0]}.png")).status_code == 404
    # Only the next generation failed.
    done = await generate(http, running, t2i_body(lora, seed=5))
    for _ in range(steps):
        done = (await fetch_body(http, running, done["id"])).json()
    assert done["status"] == "success"


async def test_never_finishes(running, http, lora):
    await set_faults(http, running, t2i_never_finishes=1, t2i_processing_steps=0)
    stuck = await generate(http, running, t2i_body(lora))
    assert stuck["status"] == "processing"
    for _ in range(5):
        assert (await fetch_body(http, running, stuck["id"])).json()["status"] == "processing"
    with pytest.raises(TimeoutError):
        await running.simulator.wait_for_generation(stuck["id"], "success", within=0.2)
    generation = running.simulator.generations_v6[stuck["id"]]
    assert generation.never_finishes and generation.fetch_count == 5
    assert (await generate(http, running, t2i_body(lora, seed=9)))["status"] == "success"


@pytest.mark.parametrize(("mode", "expected"), [("none", False), ("all", True), ("first", [True, False])])
async def test_nsfw_shapes_and_flagged_pictures_are_still_served(running, http, lora, mode, expected):
    await set_faults(http, running, t2i_nsfw=mode, t2i_processing_steps=0)
    data = await generate(http, running, t2i_body(lora, samples="2", safety_checker="yes"))
    assert data["nsfw_content_detected"] == expected
    assert type(data["nsfw_content_detected"]) is type(expected)
    assert [(await http.get(url)).status_code for url in data["output"]] == [200, 200]
    flags = {"none": [False, False], "all": [True, True], "first": [True, False]}[mode]
    assert running.simulator.generations_v6[data["id"]].nsfw == flags


# -- fetch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("http_codes", [False, True])
async def test_fetch_of_an_unknown_or_another_keys_request_is_not_found(running, host, http, lora, http_codes):
    data = await generate(http, running, t2i_body(lora))
    running.simulator.set_faults(error_http_status=http_codes)
    for response in (
        await fetch_body(http, running, data["id"], key=OTHER_KEY),
        await fetch_path(http, running, data["id"], key=OTHER_KEY),
        await fetch_body(http, running, "999999999"),
        await fetch_path(http, running, "not-a-number"),
    ):
        assert response.status_code == (404 if http_codes else 200)
        assert response.json() == NOT_FOUND
    # The other key's fetches did not move the generation on.
    assert running.simulator.generations_v6[data["id"]].fetch_count == 0


@pytest.mark.parametrize(("served", "refused"), [("body", "path"), ("path", "body")])
async def test_fetch_forms_switch_leaves_one_form(running, http, lora, served, refused):
    faults = await set_faults(http, running, fetch_forms=served)
    assert faults["fetch_forms"] == served
    data = await generate(http, running, t2i_body(lora))
    forms = {"body": fetch_body, "path": fetch_path}
    missing = await forms[refused](http, running, data["id"])
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "404 Not Found" in missing.text
    assert running.simulator.generations_v6[data["id"]].status == "processing"
    assert (await forms[served](http, running, data["id"])).json()["status"] == "success"
    outcomes = [r.outcome for r in running.simulator.requests if r.endpoint == "images_fetch"]
    assert outcomes == ["html page 404", "success"]


async def test_hold_creates_the_generation_but_the_client_times_out(running, http, lora):
    await set_faults(http, running, t2i_hold=1, t2i_hold_seconds=30)
    with pytest.raises(httpx.ReadTimeout):
        await text2img(http, running, t2i_body(lora), timeout=0.5)
    # The submission was accepted: the generation exists and can be fetched by its id.
    [generation] = running.simulator.generations_v6.values()
    assert generation.answer_held and running.simulator.faults.t2i_hold == 0
    assert (await fetch_path(http, running, generation.id)).json()["status"] == "success"
    # Only the next call was held.
    assert (await generate(http, running, t2i_body(lora, seed=3)))["status"] == "processing"


# -- the gate: duplicate filter, redirect, relocated ----------------------------------------------


async def test_duplicate_filter_applies_to_generation_and_fetch(running, http, lora):
    await set_faults(http, running, duplicate_window_seconds=30)
    body = t2i_body(lora, seed=11)
    first = await generate(http, running, body)
    again = await text2img(http, running, dict(reversed(list(body.items()))))
    assert again.json() == SPAM_FILTER
    assert list(running.simulator.generations_v6) == [first["id"]]
    assert (await fetch_body(http, running, first["id"])).json()["status"] == "success"
    assert (await fetch_body(http, running, first["id"])).json() == SPAM_FILTER
    assert running.simulator.generations_v6[first["id"]].fetch_count == 1
    # Picture downloads are not provider calls: the same GET twice is served twice.
    [link] = first["future_links"]
    assert [(await http.get(link)).status_code for _ in range(2)] == [200, 200]


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_redirect_applies_and_creates_nothing(running, http, lora, code):
    await set_faults(http, running, redirect_status=code)
    response = await text2img(http, running, t2i_body(lora))
    assert response.status_code == code
    assert response.headers["location"] == f"{running.url}/relocated/api/v6/images/text2img"
    fetched = await fetch_path(http, running, 1)
    assert fetched.headers["location"] == f"{running.url}/relocated/api/v6/images/fetch/1"
    assert running.simulator.generations_v6 == {}


async def test_a_client_following_307_generates_on_the_relocated_provider(running, http, lora):
    running.simulator.set_faults(redirect_status=307)
    response = await text2img(http, running, t2i_body(lora), follow_redirects=True)
    data = response.json()
    assert data["status"] == "processing"
    assert str(response.url) == f"{running.url}/relocated/api/v6/images/text2img"
    assert data["fetch_result"] == f"{running.url}/relocated/api/v6/images/fetch/{data['id']}"
    done = await http.post(data["fetch_result"], json={"key": KEY})
    assert done.json()["status"] == "success"


async def test_relocated_paths_work(running, http, lora):
    data = (await text2img(http, running, t2i_body(lora), prefix="/relocated/api/v6")).json()
    assert data["status"] == "processing"
    body_form = await fetch_body(http, running, str(data["id"]), prefix="/relocated/api/v6")
    assert body_form.json()["status"] == "success"
    assert (await fetch_path(http, running, data["id"], prefix="/relocated/api/v6")).json()["status"] == "success"
    assert [r.path for r in running.simulator.requests if r.endpoint in ("text2img", "images_fetch")] == [
        "/relocated/api/v6/images/text2img",
        "/relocated/api/v6/images/fetch",
        f"/relocated/api/v6/images/fetch/{data['id']}",
    ]


# -- switches, reset ------------------------------------------------------------------------------


async def test_reset_forgets_generations_and_their_pictures(running, http, lora):
    running.simulator.set_faults(t2i_processing_steps=0, t2i_nsfw="all")
    data = await generate(http, running, t2i_body(lora))
    await http.post(f"{running.url}/_sim/reset")
    sim = running.simulator
    assert sim.generations_v6 == {} and sim.requests == [] and sim.faults.t2i_nsfw == "none"
    assert (await http.get(data["output"][0])).status_code == 404
    assert (await fetch_path(http, running, data["id"])).json() == NOT_FOUND
    # The trainings went too; ids are never reused.
    assert (await text2img(http, running, t2i_body(lora))).json()["message"] == f"Model not found: {lora}"
    later = await generate(http, running, t2i_body(None, seed=2))
    assert later["id"] > data["id"]


def test_image_switches_are_checked_and_settable():
    sim = Simulator(SimulatorConfig())
    defaults = sim.faults.to_json()
    assert {
        name: defaults[name]
        for name in defaults
        if name.startswith("t2i_") or name in ("fetch_forms", "image_ttl_seconds")
    } == {
        "t2i_processing_steps": 1,
        "t2i_eta": 2.0,
        "t2i_fail": 0,
        "t2i_fail_kind": "error_string",
        "t2i_fail_message": "Failed, Try Again",
        "t2i_fail_processing": 0,
        "t2i_fail_processing_message": "Image generation failed. Please try again.",
        "t2i_nsfw": "none",
        "t2i_never_finishes": 0,
        "image_ttl_seconds": 3600.0,
        "fetch_forms": "both",
        "t2i_hold": 0,
        "t2i_hold_seconds": 0.0,
    }
    for bad in (
        {"t2i_processing_steps": -1},
        {"t2i_eta": "soon"},
        {"t2i_fail_kind": "exploded"},
        {"t2i_fail_message": ""},
        {"t2i_nsfw": "some"},
        {"fetch_forms": "query"},
        {"image_ttl_seconds": -1},
        {"t2i_hold_seconds": True},
    ):
        with pytest.raises(FaultError):
            sim.set_faults(**bad)
    assert sim.faults.to_json() == defaults
    updates = parse_fault_assignments(["t2i_fail_kind=queue_full", "t2i_nsfw=first", "image_ttl_seconds=0.5"])
    sim.set_faults(**updates)
    assert (sim.faults.t2i_fail_kind, sim.faults.t2i_nsfw, sim.faults.image_ttl_seconds) == ("queue_full", "first", 0.5)


async def test_t2i_fail_uses_queue_retry_after(running, http, lora):
    await set_faults(http, running, t2i_fail=2, t2i_fail_kind="queue_full", queue_retry_after=2.5)
    data = (await text2img(http, running, t2i_body(lora))).json()
    assert data == QUEUE_FULL | {"retry_after": 2.5}
    assert running.simulator.faults.t2i_fail == 1
