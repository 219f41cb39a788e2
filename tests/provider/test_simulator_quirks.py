"""The simulator's switches for the provider's ambiguous answers, over real loopback HTTP.

Transient "not found" from the status call, queue-full and spam-filter refusals, the duplicate
request window, failures only polling reveals, one accepted spelling of the women training type,
validation errors as a string, a provider that moved, the list variants, and the `NAME=VALUE`
parser behind `lorabot simulate --fault`. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from typing import Any

import httpx
import pytest

from bot.simulator import FaultError, Simulator, SimulatorConfig, parse_fault_assignments, serve
from tests.provider.simulated import served_url
from tests.provider.test_simulator import KEY, REPO_ROOT, page_body, post, status_of, submit

NOT_FOUND = {"status": "error", "messege": "Training ID does not exist"}
QUEUE_FULL_MESSAGE = "Rate limit exceeded. Maximum 5 queued requests allowed."
SPAM_FILTER = {
    "status": "error",
    "message": "Rate limit exceeded",
    "tips": (
        "you are sending same request multiple times, spam filter is enabled, please wait for 30 seconds and try again"
    ),
}
INVALID_TYPE = "The selected training type is invalid."


async def set_faults(http: httpx.AsyncClient, running, **faults: Any) -> dict[str, Any]:
    """Set switches the way another process would: `POST /_sim/faults`."""
    response = await http.post(f"{running.url}/_sim/faults", json=faults)
    assert response.status_code == 200, response.text
    return dict(response.json()["faults"])


# -- transient "not found" on fine_tune_status ---------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "code", "content_type"),
    [("json", 404, "application/json"), ("html", 404, "text/html"), ("json_200", 200, "application/json")],
)
async def test_status_not_found_n_times_then_the_real_status(running, host, http, shape, code, content_type):
    training_id = await submit(http, running, page_body(host, count=1))
    await running.simulator.wait_for_status(training_id, "model_ready")
    faults = await set_faults(http, running, status_not_found=2, status_not_found_shape=shape)
    assert (faults["status_not_found"], faults["status_not_found_shape"]) == (2, shape)

    for left in (1, 0):
        response = await post(http, running, f"fine_tune_status/{training_id}", {"key": KEY})
        assert response.status_code == code
        assert response.headers["content-type"].startswith(content_type)
        if shape == "html":
            assert "<title>404 Not Found</title>" in response.text and "nginx" in response.text
        else:
            assert response.json() == NOT_FOUND
        assert running.simulator.faults.status_not_found == left

    assert (await status_of(http, running, training_id))["messege"] == "model_ready"
    # The training was never touched, and each answer was recorded.
    assert training_id in running.simulator.trainings
    assert [r.http_status for r in running.simulator.requests if r.endpoint == "fine_tune_status"] == [
        code,
        code,
        200,
    ]


async def test_status_not_found_comes_before_the_key_check(running, host, http):
    training_id = await submit(http, running, page_body(host, count=1))
    running.simulator.set_faults(status_not_found=1, error_http_status=True)
    response = await post(http, running, f"fine_tune_status/{training_id}", {"key": ""})
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    again = await post(http, running, f"fine_tune_status/{training_id}", {"key": ""})
    assert again.status_code == 401


# -- submission refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("http_codes", [False, True])
@pytest.mark.parametrize(("retry_after", "expected_retry"), [(12, 12), (2.5, 2.5)])
async def test_queue_full_creates_nothing_and_carries_retry_after(
    running, host, http, http_codes, retry_after, expected_retry
):
    await set_faults(
        http,
        running,
        fail_submission=1,
        fail_submission_kind="queue_full",
        queue_retry_after=retry_after,
        error_http_status=http_codes,
    )
    response = await post(http, running, "lora_fine_tune", page_body(host, count=1))
    assert response.status_code == (429 if http_codes else 200)
    assert response.json() == {"status": "error", "message": QUEUE_FULL_MESSAGE, "retry_after": expected_retry}
    assert type(response.json()["retry_after"]) is type(expected_retry)
    assert running.simulator.trainings == {}
    assert (await post(http, running, "finetune_list", {"key": KEY})).json()["data"] == []
    # Only the next one was refused.
    await submit(http, running, page_body(host, count=1))
    assert len(running.simulator.trainings) == 1


async def test_rate_limited_is_an_alias_of_queue_full(running, host, http):
    faults = await set_faults(http, running, fail_submission=1, fail_submission_kind="rate_limited")
    assert faults["fail_submission_kind"] == "queue_full"
    assert faults["queue_retry_after"] == 30
    data = (await post(http, running, "lora_fine_tune", page_body(host, count=1))).json()
    assert data == {"status": "error", "message": QUEUE_FULL_MESSAGE, "retry_after": 30}
    assert isinstance(data["retry_after"], int)


@pytest.mark.parametrize("http_codes", [False, True])
async def test_spam_filter_refusal_creates_nothing(running, host, http, http_codes):
    await set_faults(http, running, fail_submission=1, fail_submission_kind="spam_filter", error_http_status=http_codes)
    response = await post(http, running, "lora_fine_tune", page_body(host, count=1))
    assert response.status_code == (429 if http_codes else 200)
    assert response.json() == SPAM_FILTER
    assert running.simulator.trainings == {}


# -- the duplicate-request window ----------------------------------------------------------------


@pytest.mark.parametrize("http_codes", [False, True])
async def test_duplicate_window_refuses_only_identical_recent_requests(running, host, http, http_codes):
    window = 0.5
    await set_faults(http, running, duplicate_window_seconds=window, error_http_status=http_codes)
    body = page_body(host, count=1)

    first = await post(http, running, "lora_fine_tune", body)
    assert first.json()["status"] == "success"
    training_id = first.json()["training_id"]

    # The same body with its keys in another order is the same request: refused, nothing created.
    again = await post(http, running, "lora_fine_tune", dict(reversed(list(body.items()))))
    assert again.status_code == (429 if http_codes else 200)
    assert again.json() == SPAM_FILTER
    assert list(running.simulator.trainings) == [training_id]
    # The first one was processed normally: the training exists and walks.
    await running.simulator.wait_for_status(training_id, "model_ready")

    # A different body is a different request.
    other = await post(http, running, "lora_fine_tune", body | {"seed": "1"})
    assert other.json()["status"] == "success"
    # The same body on the sandbox path is a different request too.
    sandbox = await http.post(f"{running.url}/api/sandbox/v3/lora_fine_tune", json=body)
    assert sandbox.json()["status"] == "success"
    assert len(running.simulator.trainings) == 3

    # After the window the identical request goes through again (the refusal did not extend it).
    await asyncio.sleep(window + 0.05)
    late = await post(http, running, "lora_fine_tune", body)
    assert late.json()["status"] == "success"
    assert len(running.simulator.trainings) == 4

    records = [r for r in running.simulator.requests if r.endpoint == "lora_fine_tune"]
    assert [r.http_status for r in records] == [200, 429 if http_codes else 200, 200, 200, 200]
    assert records[1].outcome is not None and records[1].outcome.startswith("duplicate request refused")
    assert "Rate limit exceeded" in records[1].outcome
    assert records[1].training_id is None


async def test_duplicate_window_covers_every_provider_endpoint(running, host, http):
    keep = await submit(http, running, page_body(host, count=1))
    gone = await submit(http, running, page_body(host, count=2))
    running.simulator.step_seconds = 60
    running_id = await submit(http, running, page_body(host, count=3))
    running.simulator.set_faults(duplicate_window_seconds=30)
    crop = {"key": KEY, "image": "data:image/png;base64,@@@@"}
    calls = [
        (f"fine_tune_status/{keep}", {"key": KEY}),
        ("finetune_list", {"key": KEY}),
        (f"cancle_training/{running_id}", {"key": KEY}),
        (f"finetune/delete/{gone}", {"key": KEY}),
        ("base64_crop", crop),
    ]
    for path, body in calls:
        first = (await post(http, running, path, body)).json()
        assert first != SPAM_FILTER, path
        second = (await post(http, running, path, body)).json()
        assert second == SPAM_FILTER, path
    # The refusals did nothing: the cancel and the delete happened once, by the first request.
    assert running.simulator.trainings[running_id].cancelled
    assert running.simulator.trainings[gone].deleted
    assert not running.simulator.trainings[keep].deleted
    # A different path or another key is another request.
    assert (await post(http, running, f"fine_tune_status/{running_id}", {"key": KEY})).json() != SPAM_FILTER
    assert (await post(http, running, "finetune_list", {"key": "another-key"})).json()["data"] == []
    # Reset forgets the window's memory along with the switch.
    await running.simulator.reset()
    running.simulator.set_faults(duplicate_window_seconds=30)
    assert (await post(http, running, "finetune_list", {"key": KEY})).json() != SPAM_FILTER


async def test_duplicate_window_off_processes_identical_requests(running, http):
    for _ in range(3):
        assert (await post(http, running, "finetune_list", {"key": KEY})).json()["status"] == "success"


# -- failures that only polling reveals ----------------------------------------------------------


FAILED_SHAPES = [
    ("messege_failed", {"status": "success", "messege": "failed", "data": "OOM"}),
    ("status_failed", {"status": "failed", "messege": "OOM"}),
    ("status_error", {"status": "error", "message": "OOM"}),
]


@pytest.mark.parametrize(("shape", "expected"), FAILED_SHAPES)
async def test_failure_without_webhook_shows_only_when_polling(running, host, hooks, http, shape, expected):
    faults = await set_faults(
        http,
        running,
        fail_training=1,
        fail_training_at="training_success",
        fail_training_reason="OOM",
        failure_webhook=False,
        failure_status_shape=shape,
    )
    assert (faults["failure_webhook"], faults["failure_status_shape"]) == (False, shape)
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    training = await running.simulator.wait_until_settled(training_id)
    assert training.status == "failed"
    # The steps before the failure sent theirs; the failure step sent none.
    assert hooks.statuses == ["deploying_gpu", "training_started"]
    assert all(body["status"] == "success" for body in hooks.bodies)
    assert [(d.training_status, d.dropped) for d in training.deliveries][-1] == ("failed", True)

    response = await post(http, running, f"fine_tune_status/{training_id}", {"key": KEY})
    assert response.status_code == 200
    assert response.json() == expected


@pytest.mark.parametrize(("shape", "expected"), FAILED_SHAPES)
async def test_failure_status_shape_with_the_failure_webhook_on(running, host, hooks, http, shape, expected):
    running.simulator.set_faults(fail_training=1, fail_training_reason="OOM", failure_status_shape=shape)
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.bodies[-1] == {"status": "failed", "training_status": "failed", "logs": "OOM", "model_id": training_id}
    assert await status_of(http, running, training_id) == expected


async def test_failure_webhook_off_still_flushes_held_webhooks(running, host, hooks, http):
    running.simulator.set_faults(
        fail_training=1, fail_training_at="trained_model_compressing", failure_webhook=False, reorder_webhooks="reverse"
    )
    training_id = await submit(http, running, page_body(host, webhook=hooks.url, count=1))
    await running.simulator.wait_until_settled(training_id)
    assert hooks.statuses == ["training_success", "training_started", "deploying_gpu"]


# -- one spelling of "woman" ---------------------------------------------------------------------


@pytest.mark.parametrize("http_codes", [False, True])
@pytest.mark.parametrize(
    ("shape", "expected"),
    [("object", {"training_type": [INVALID_TYPE]}), ("string", INVALID_TYPE)],
)
@pytest.mark.parametrize(("accepted", "refused"), [("female", ("women", "femal")), ("women", ("female", "femal"))])
async def test_woman_spelling_refuses_the_other_spellings(
    running, host, http, http_codes, shape, expected, accepted, refused
):
    await set_faults(http, running, woman_spelling=accepted, validation_error_shape=shape, error_http_status=http_codes)
    body = page_body(host, count=1)
    for spelling in refused:
        response = await post(http, running, "lora_fine_tune", body | {"training_type": spelling})
        assert response.status_code == (400 if http_codes else 200)
        assert response.json() == {"status": "error", "messege": expected}
    assert running.simulator.trainings == {}
    training_id = await submit(http, running, body | {"training_type": accepted})
    assert running.simulator.trainings[training_id].request["training_type"] == accepted
    # Other training types are unaffected.
    await submit(http, running, body | {"training_type": "men"})


async def test_both_spellings_are_accepted_by_default(running, host, http):
    body = page_body(host, count=1)
    for spelling in ("female", "women", "femal"):
        await submit(http, running, body | {"training_type": spelling})
    assert len(running.simulator.trainings) == 3


async def test_string_validation_errors_apply_to_every_validation_error(running, host, http):
    running.simulator.set_faults(validation_error_shape="string")
    body = page_body(host, count=1)
    one = (await post(http, running, "lora_fine_tune", body | {"instance_prompt": ""})).json()
    assert one == {"status": "error", "messege": "The instance prompt field is required."}
    two = (await post(http, running, "lora_fine_tune", body | {"instance_prompt": "", "lora_type": "x"})).json()
    assert two == {"status": "error", "messege": "The instance prompt field is required. (and 1 more error)"}
    crop = (await post(http, running, "base64_crop", {"key": KEY})).json()
    assert crop == {"status": "error", "messege": "The image field is required."}
    running.simulator.set_faults(validation_error_shape="object")
    crop = (await post(http, running, "base64_crop", {"key": KEY})).json()
    assert crop == {"status": "error", "messege": {"image": ["The image field is required."]}}
    assert running.simulator.trainings == {}


# -- a moved provider ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_redirect_answers_location_and_does_nothing(running, host, http, code):
    await set_faults(http, running, redirect_status=code)
    for path, body in (("finetune_list", {"key": KEY}), ("lora_fine_tune", page_body(host, count=1))):
        response = await post(http, running, path, body)
        assert response.status_code == code
        assert response.headers["location"] == f"{running.url}/relocated/api/v3/{path}"
        assert response.headers["content-type"].startswith("text/html")
        assert str(code) in response.text
    sandbox = await http.post(f"{running.url}/api/sandbox/v3/fine_tune_status/abc", json={"key": KEY})
    assert sandbox.headers["location"] == f"{running.url}/relocated/api/sandbox/v3/fine_tune_status/abc"
    assert running.simulator.trainings == {}
    assert [r.http_status for r in running.simulator.requests] == [code] * 3
    assert all((r.outcome or "").startswith("redirected") for r in running.simulator.requests)

    # The relocated provider is served normally while the redirect stays on.
    relocated = await http.post(f"{running.url}/relocated/api/v3/finetune_list", json={"key": KEY})
    assert relocated.json() == {"status": "success", "messege": "model list", "data": []}


async def test_a_client_following_307_reaches_the_relocated_provider(running, host, http):
    running.simulator.set_faults(redirect_status=307)
    response = await http.post(
        f"{running.url}/api/v3/lora_fine_tune", json=page_body(host, count=1), follow_redirects=True
    )
    assert response.status_code == 200 and response.json()["status"] == "success"
    assert str(response.url).startswith(f"{running.url}/relocated/api/v3/")
    training_id = response.json()["training_id"]
    await running.simulator.wait_for_status(training_id, "model_ready")
    status = await http.post(
        f"{running.url}/api/v3/fine_tune_status/{training_id}", json={"key": KEY}, follow_redirects=True
    )
    assert status.json()["messege"] == "model_ready"
    # Switched off, the old paths answer again.
    running.simulator.set_faults(redirect_status=None)
    assert (await status_of(http, running, training_id))["messege"] == "model_ready"


async def test_redirect_to_a_configured_target(running, http):
    faults = await set_faults(http, running, redirect_status="308", redirect_target="https://moved.example/base/")
    assert (faults["redirect_status"], faults["redirect_target"]) == (308, "https://moved.example/base")
    response = await post(http, running, "cancle_training/AbCdE12345", {"key": KEY})
    assert response.headers["location"] == "https://moved.example/base/api/v3/cancle_training/AbCdE12345"


async def test_bad_redirect_switches_are_refused(running, http):
    for bad in ({"redirect_status": 303}, {"redirect_status": True}, {"redirect_target": "/relative"}):
        response = await http.post(f"{running.url}/_sim/faults", json=bad)
        assert response.status_code == 400, bad
    assert running.simulator.faults.redirect_status is None


# -- finetune_list variants ----------------------------------------------------------------------


async def test_list_variants(running, host, http):
    ready = await submit(http, running, page_body(host, count=1))
    await running.simulator.wait_for_status(ready, "model_ready")
    running.simulator.set_faults(fail_training=1, fail_training_at="training_started")
    failed = await submit(http, running, page_body(host, count=2))
    await running.simulator.wait_until_settled(failed)
    running.simulator.set_faults(stall_training=1, stall_at="training_started")
    stalled = await submit(http, running, page_body(host, count=3))
    await running.simulator.wait_for_status(stalled, "training_started")

    async def listed(**faults: Any) -> Any:
        await set_faults(http, running, **faults)
        data = (await post(http, running, "finetune_list", {"key": KEY})).json()
        assert (data["status"], data["messege"]) == ("success", "model list")
        return data["data"]

    assert await listed(list_shows="all", list_item_shape="string") == [ready, failed, stalled]
    assert await listed(list_shows="ready", list_item_shape="string") == [ready]
    assert await listed(list_shows="all", list_item_shape="object") == [
        {"model_id": ready, "status": "model_ready"},
        {"model_id": failed, "status": "failed"},
        {"model_id": stalled, "status": "training_started"},
    ]
    assert await listed(list_shows="ready", list_item_shape="object") == [{"model_id": ready, "status": "model_ready"}]
    # Another key still sees nothing.
    assert (await post(http, running, "finetune_list", {"key": "someone-else"})).json()["data"] == []


# -- switches: checking, NAME=VALUE and serve(faults=...) -----------------------------------------


def test_new_switches_are_checked_and_json_settable():
    sim = Simulator(SimulatorConfig())
    for bad in (
        {"status_not_found": -1},
        {"status_not_found_shape": "xml"},
        {"fail_submission_kind": "too_many"},
        {"queue_retry_after": "soon"},
        {"duplicate_window_seconds": -1},
        {"failure_webhook": "no"},
        {"failure_status_shape": "exploded"},
        {"woman_spelling": "woman"},
        {"validation_error_shape": "list"},
        {"redirect_status": 200},
        {"redirect_target": "ftp://x"},
        {"list_shows": "some"},
        {"list_item_shape": "tuple"},
    ):
        with pytest.raises(FaultError):
            sim.set_faults(**bad)
    sim.set_faults(
        status_not_found=1,
        status_not_found_shape="html",
        fail_submission_kind="spam_filter",
        queue_retry_after=7,
        duplicate_window_seconds=1.5,
        failure_webhook=False,
        failure_status_shape="status_error",
        woman_spelling="women",
        validation_error_shape="string",
        redirect_status=302,
        list_shows="ready",
        list_item_shape="object",
    )
    state = json.loads(json.dumps(sim.faults.to_json()))
    assert state["status_not_found_shape"] == "html" and state["redirect_status"] == 302
    assert state["redirect_target"] is None and state["duplicate_window_seconds"] == 1.5


def test_parse_fault_assignments():
    parsed = parse_fault_assignments(
        [
            "status_not_found=2",
            "fail_submission_kind=queue_full",
            'drop_webhooks=["deploying_gpu"]',
            "failure_webhook=false",
            "redirect_target=http://127.0.0.1:9/x",
            "fail_submission_message=404",
            "unknown_status_word=null",
            "step_seconds=0.5",
            " queue_retry_after = 2.5 ",
        ]
    )
    assert parsed == {
        "status_not_found": 2,
        "fail_submission_kind": "queue_full",
        "drop_webhooks": ["deploying_gpu"],
        "failure_webhook": False,
        "redirect_target": "http://127.0.0.1:9/x",
        "fail_submission_message": "404",
        "unknown_status_word": None,
        "step_seconds": 0.5,
        "queue_retry_after": 2.5,
    }
    sim = Simulator(SimulatorConfig())
    sim.set_faults(**parsed)
    assert sim.faults.drop_webhooks == frozenset({"deploying_gpu"}) and sim.step_seconds == 0.5
    assert parse_fault_assignments(["status_errors=1", "status_errors=3"]) == {"status_errors": 3}
    assert parse_fault_assignments([]) == {}


@pytest.mark.parametrize(
    ("items", "mentions"),
    [
        (["status_not_found"], "NAME=VALUE"),
        (["=2"], "NAME=VALUE"),
        (["no_such_switch=1"], "no_such_switch"),
        (["status_not_found=two"], "status_not_found"),
        (["status_not_found=-1"], ">= 0"),
        (["redirect_status=303"], "redirect_status"),
        (["unknown_status_word=model_ready"], "unknown_status_word"),
        (["step_seconds=-1"], "step_seconds"),
        ("status_not_found=2", "list"),
    ],
)
def test_parse_fault_assignments_rejects_malformed_items(items, mentions):
    with pytest.raises(FaultError, match=re.escape(mentions)):
        parse_fault_assignments(items)


def test_serve_checks_its_faults_before_starting():
    with pytest.raises(FaultError, match="no_such_switch"):
        serve("127.0.0.1", 0, 0.02, None, faults={"no_such_switch": 1})
    with pytest.raises(FaultError, match="status_not_found"):
        serve("127.0.0.1", 0, 0.02, None, faults={"status_not_found": "x"})


async def test_serve_applies_its_faults_at_start(http):
    faults = parse_fault_assignments(["status_not_found=2", "fail_submission_kind=rate_limited", "list_shows=ready"])
    code = f"from bot.simulator import serve; serve('127.0.0.1', 0, 0.02, None, faults={faults!r})"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output: list[str] = []
    try:
        url = await served_url(proc, output)
        state = (await http.get(f"{url}/_sim/faults")).json()["faults"]
        assert (state["status_not_found"], state["fail_submission_kind"], state["list_shows"]) == (
            2,
            "queue_full",
            "ready",
        )
        response = await http.post(f"{url}/api/v3/fine_tune_status/AbCdE12345", json={"key": KEY})
        assert response.status_code == 404
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 20)
        output.append(rest.decode())
    assert proc.returncode == 0, "".join(output)
    assert "fault switches at start" in "".join(output)


async def test_create_status_word_changes_only_the_create_answer(running, host, http):
    running.simulator.set_faults(create_status_word="queued")
    response = await post(http, running, "lora_fine_tune", page_body(host, count=1))
    data = response.json()
    assert (data["status"], data["messege"]) == ("success", "queued") and data["training_id"]
    assert data["training_id"] in running.simulator.trainings
    running.simulator.set_faults(create_status_word=None)
    assert (await post(http, running, "lora_fine_tune", page_body(host, count=1))).json()["messege"] == "deploying_gpu"
