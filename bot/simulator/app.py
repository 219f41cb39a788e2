"""The HTTP face of the provider simulator (aiohttp).

Provider endpoints, all `POST` with a JSON body carrying `key`, under `/api/v3/` and (as an alias)
`/api/sandbox/v3/`:
`lora_fine_tune`, `fine_tune_status/{id}`, `cancle_training/{id}` and `cancel_training/{id}`,
`finetune_list`, `finetune/delete/{id}`, `base64_crop`; plus `GET /generations/{name}.png` for
the links `base64_crop` returns. The v6 image generation, under `/api/v6/`: `images/text2img`
(with a trained LoRA as `lora_model`), `images/fetch` (`request_id` in the body) and
`images/fetch/{id}`; the pictures are served at `GET /generations/img/{name}.png` until they
expire (`image_ttl_seconds`). The simulator never calls a generation's `webhook`: clients fetch.
The same endpoints are also served under `/relocated/api/v3/`, `/relocated/api/sandbox/v3/` and
`/relocated/api/v6/`: where a "moved" provider (fault `redirect_status`) points.

Two fault switches act on every provider endpoint (not the picture downloads) before its handler
runs (`_provider_gate`):
`redirect_status` (answer a 3xx with a `Location` and do nothing) and `duplicate_window_seconds`
(refuse a request identical to a recent one with the spam-filter body). Every provider request,
refused or not, is recorded in `Simulator.requests` with its HTTP status and outcome.

Control endpoints (no key; for tests and for driving a simulator in another process):
`GET /_sim/state`, `GET|POST /_sim/faults`, `POST /_sim/reset`,
`POST /_sim/trainings/{id}/advance`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from bot.simulator.faults import FAILED, FaultError, check_settings
from bot.simulator.images import ImageRejected, crop_to_png, fetch_images, parse_data_uri
from bot.simulator.state import (
    CREATE_ETA_TEXT,
    GENERATION_FAILED,
    GENERATION_PROCESSING,
    Generation,
    ImageGeneration,
    RequestRecord,
    Simulator,
    SimulatorConfig,
    Training,
    key_owner,
)
from bot.simulator.validation import Errors, summarize_errors, validate_lora_request, validate_text2img_request

log = logging.getLogger("bot.simulator")

SIMULATOR_KEY: Final = web.AppKey("simulator", Simulator)

API_PREFIXES: Final[tuple[str, ...]] = ("/api/v3", "/api/sandbox/v3")
#: The v6 image generation API.
V6_PREFIX: Final = "/api/v6"
#: Where `text2img` links its pictures (the `base64_crop` links stay at `/generations/<name>.png`).
PICTURES_PATH: Final = "/generations/img"
#: Where the "moved" provider lives (fault `redirect_status`); never redirected itself.
RELOCATED_PREFIX: Final = "/relocated"

INVALID_KEY_BODY: Final[dict[str, Any]] = {
    "status": "error",
    "message": "Invalid Api Key",
    "tip": (
        "1. Make sure you are passing Content-Type: application/json in header. "
        "2. Make sure you are doing POST request with valid JSON. "
        "3. Make sure your JSON does not have error, use jsonlint to validate json array. "
        "4. Make sure you have valid API key."
    ),
}
INSUFFICIENT_CREDITS_BODY: Final[dict[str, Any]] = {
    "status": "error",
    "message": "Insufficient credits. Please add more credits to continue.",
}
#: The per-account queue limit refusal; its `retry_after` comes from the `queue_retry_after` switch.
QUEUE_FULL_MESSAGE: Final = "Rate limit exceeded. Maximum 5 queued requests allowed."
#: The duplicate-request spam filter refusal (note `tips`, not `tip`).
SPAM_FILTER_BODY: Final[dict[str, Any]] = {
    "status": "error",
    "message": "Rate limit exceeded",
    "tips": (
        "you are sending same request multiple times, spam filter is enabled, please wait for 30 seconds and try again"
    ),
}
NOT_FOUND_MESSAGE: Final = "Training ID does not exist"
ALREADY_FINISHED_MESSAGE: Final = "Training has already finished."
INTERNAL_ERROR_BODY: Final[dict[str, Any]] = {
    "status": "error",
    "message": "Internal server error. Please try again.",
}
UNAVAILABLE_BODY: Final[dict[str, Any]] = {
    "status": "error",
    "message": "Service temporarily unavailable. Please try again later.",
}
BAD_GATEWAY_HTML: Final = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)
NOT_FOUND_HTML: Final = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
#: The v6 `processing` answer's fixed texts (the docs' examples).
PROCESSING_TIP: Final = "for faster speed, keep resolution upto 512x512"
PROCESSING_MESSAGE: Final = "Try to fetch request after given estimated time"
REQUEST_NOT_FOUND_MESSAGE: Final = "Request not found"
REDIRECT_REASONS: Final[dict[int, str]] = {
    301: "301 Moved Permanently",
    302: "302 Found",
    307: "307 Temporary Redirect",
    308: "308 Permanent Redirect",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Set by `_provider_gate` on a request it refused; `_record_requests` puts it in the outcome.
_REFUSED: Final = web.RequestKey("sim_refused", str)
#: Set by the v6 handlers: the generation id a request named or created (`RequestRecord.request_id`).
_REQUEST_ID: Final = web.RequestKey("sim_request_id", str)


def _sim(request: web.Request) -> Simulator:
    return request.app[SIMULATOR_KEY]


def _error(sim: Simulator, body: dict[str, Any], http_status: int) -> web.Response:
    """An error answer: HTTP 200 like the provider's examples, or `http_status` when so switched."""
    return web.json_response(body, status=http_status if sim.faults.error_http_status else 200)


def _invalid_key(sim: Simulator) -> web.Response:
    return _error(sim, dict(INVALID_KEY_BODY), 401)


def _not_found(sim: Simulator) -> web.Response:
    return _error(sim, {"status": "error", "messege": NOT_FOUND_MESSAGE}, 404)


def _validation_error(sim: Simulator, errors: Errors) -> web.Response:
    """A field -> messages validation error, as an object or one string (`validation_error_shape`)."""
    messege: Errors | str = errors
    if sim.faults.validation_error_shape == "string":
        messege = summarize_errors(errors)
    return _error(sim, {"status": "error", "messege": messege}, 400)


def _nginx_page(title: str) -> str:
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


async def _read_json(request: web.Request) -> dict[str, Any] | None:
    """The JSON object body, or None (the provider answers "Invalid Api Key" then, see its tip)."""
    if request.content_type != "application/json":
        return None
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _owner(sim: Simulator, body: dict[str, Any]) -> str | None:
    key = body.get("key")
    if not isinstance(key, str) or not key.strip():
        return None
    expected = sim.config.api_key
    if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        return None
    return key_owner(key)


async def _authenticated(request: web.Request) -> tuple[Simulator, str, dict[str, Any]] | web.Response:
    """The simulator, the key's owner tag and the JSON body; or the invalid-key answer."""
    sim = _sim(request)
    body = await _read_json(request)
    owner = None if body is None else _owner(sim, body)
    if body is None or owner is None:
        return _invalid_key(sim)
    return sim, owner, body


# -- middlewares ---------------------------------------------------------------------------------


def _outcome(response: web.StreamResponse) -> tuple[str | None, str | None]:
    if 300 <= response.status < 400:
        return f"redirect {response.status} -> {response.headers.get('Location', '')}"[:300], None
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        if isinstance(response, web.Response) and response.content_type == "text/html":
            return f"html page {response.status}", None
        return None, None
    body = response.body
    if not isinstance(body, bytes):
        return None, None
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    message = data.get("messege", data.get("message"))
    text = str(data.get("status"))
    if isinstance(message, str) and message:
        text = f"{text}: {message}"
    elif isinstance(message, dict):
        text = f"{text}: {json.dumps(message)}"
    training_id = data.get("training_id")
    return text[:300], training_id if isinstance(training_id, str) else None


@web.middleware
async def _record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = _ENDPOINT_NAMES.get(request.match_info.route.handler)
    if name is None:
        return await handler(request)
    sim = _sim(request)
    record = RequestRecord(
        endpoint=name,
        path=request.path,
        at=time.time(),
        training_id=request.match_info.get("training_id"),
        request_id=request.match_info.get("request_id"),
    )
    sim.requests.append(record)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        record.http_status = exc.status
        raise
    except Exception:
        log.exception("simulator: unexpected error in %s", name)
        response = web.json_response(dict(INTERNAL_ERROR_BODY), status=500)
    finally:
        record.request_id = request.get(_REQUEST_ID, record.request_id)
    record.http_status = response.status
    record.outcome, created_id = _outcome(response)
    refused = request.get(_REFUSED)
    if isinstance(refused, str):
        record.outcome = f"{refused}: {record.outcome}"[:300] if record.outcome else refused
    record.training_id = record.training_id or created_id
    return response


def _redirect(sim: Simulator, request: web.Request) -> web.Response | None:
    code = sim.faults.redirect_status
    if code is None or not request.path.startswith("/api/"):
        return None
    target = sim.faults.redirect_target or f"{_origin(sim, request)}{RELOCATED_PREFIX}"
    location = target.rstrip("/") + request.raw_path
    request[_REFUSED] = "redirected (fault)"
    log.info("%s: answering %d (fault redirect_status)", request.path, code)
    return web.Response(
        text=_nginx_page(REDIRECT_REASONS.get(code, str(code))),
        status=code,
        content_type="text/html",
        headers={"Location": location},
    )


def _fingerprint(path: str, raw: bytes) -> str:
    """Path plus body, with a JSON body canonicalised (keys sorted), hashed (the key is not kept)."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = raw
    return hashlib.sha256(path.encode() + b"\0" + canonical).hexdigest()


@web.middleware
async def _provider_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults that answer for every provider endpoint, before the handler runs."""
    name = _ENDPOINT_NAMES.get(request.match_info.route.handler)
    if name is None or name in _UNGATED_ENDPOINTS:
        return await handler(request)
    sim = _sim(request)
    redirect = _redirect(sim, request)
    if redirect is not None:
        return redirect
    if sim.faults.duplicate_window_seconds > 0 and sim.is_duplicate(_fingerprint(request.path, await request.read())):
        request[_REFUSED] = "duplicate request refused (fault duplicate_window_seconds)"
        log.info("%s: refusing a duplicate request (fault)", request.path)
        return _error(sim, dict(SPAM_FILTER_BODY), 429)
    return await handler(request)


# -- provider endpoints --------------------------------------------------------------------------


def _queue_full_body(retry_after: float) -> dict[str, Any]:
    seconds: float = int(retry_after) if float(retry_after).is_integer() else retry_after
    return {"status": "error", "message": QUEUE_FULL_MESSAGE, "retry_after": seconds}


def _submission_failure(sim: Simulator) -> web.Response:
    faults = sim.faults
    kind = faults.fail_submission_kind
    if kind == "invalid_key":
        return _invalid_key(sim)
    if kind == "insufficient_credits":
        return _error(sim, dict(INSUFFICIENT_CREDITS_BODY), 402)
    if kind in ("queue_full", "rate_limited"):
        return _error(sim, _queue_full_body(faults.queue_retry_after), 429)
    if kind == "spam_filter":
        return _error(sim, dict(SPAM_FILTER_BODY), 429)
    if kind == "error":
        return _error(sim, {"status": "error", "messege": faults.fail_submission_message}, 400)
    return _error(sim, {"status": "failed", "id": "", "message": faults.fail_submission_message, "output": ""}, 400)


async def lora_fine_tune(request: web.Request) -> web.StreamResponse:
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, body = auth
    if sim.take("fail_submission"):
        log.info("lora_fine_tune: failing submission (fault %s)", sim.faults.fail_submission_kind)
        return _submission_failure(sim)
    checked = validate_lora_request(body, woman_spelling=sim.faults.woman_spelling)
    if isinstance(checked, dict):
        return _validation_error(sim, checked)
    try:
        images = await fetch_images(sim.image_http, checked.images, max_bytes=sim.config.max_image_bytes)
    except ImageRejected as exc:
        log.info("lora_fine_tune rejected: %s", exc)
        return _error(sim, {"status": "error", "messege": str(exc)}, 400)
    training = sim.create_training(
        owner=owner,
        request=checked.echo,
        warnings=list(checked.warnings),
        images=images,
        webhook_url=checked.webhook,
    )
    answer = {
        "status": "success",
        "messege": sim.faults.create_status_word or "deploying_gpu",
        "data": CREATE_ETA_TEXT,
        "training_id": training.training_id,
    }
    if sim.take("timeout_submission"):
        training.submission_held = True
        sim.start_walk(training)
        log.info("training %s: holding the answer %.1fs (fault)", training.training_id, sim.faults.hold_seconds)
        await sim.hold(sim.faults.hold_seconds)
        return web.json_response(answer)
    # Answer first, then start the walk, so the first webhook follows the answer. The training
    # exists now: it walks even if the client went away and the answer cannot be written.
    response = web.json_response(answer)
    try:
        await response.prepare(request)
        await response.write_eof()
    finally:
        sim.start_walk(training)
    return response


async def _status_fault(sim: Simulator) -> web.Response | None:
    if not sim.take("status_errors"):
        return None
    mode = sim.faults.status_error_mode
    log.info("fine_tune_status: injecting %s (fault)", mode)
    if mode == "500":
        return web.json_response(dict(INTERNAL_ERROR_BODY), status=500)
    if mode == "503":
        return web.json_response(dict(UNAVAILABLE_BODY), status=503, headers={"Retry-After": "1"})
    if mode == "502":
        return web.Response(text=BAD_GATEWAY_HTML, status=502, content_type="text/html")
    await sim.hold(sim.faults.status_hang_seconds)
    return None


def _transient_not_found(sim: Simulator) -> web.Response | None:
    if not sim.take("status_not_found"):
        return None
    shape = sim.faults.status_not_found_shape
    log.info("fine_tune_status: answering not found (fault, %s)", shape)
    if shape == "html":
        return web.Response(text=NOT_FOUND_HTML, status=404, content_type="text/html")
    body = {"status": "error", "messege": NOT_FOUND_MESSAGE}
    return web.json_response(body, status=200 if shape == "json_200" else 404)


def _failed_status(sim: Simulator, training: Training) -> dict[str, Any]:
    reason = training.status_data
    shape = sim.faults.failure_status_shape
    if shape == "status_failed":
        return {"status": "failed", "messege": reason}
    if shape == "status_error":
        return {"status": "error", "message": reason}
    return {"status": "success", "messege": FAILED, "data": reason}


async def fine_tune_status(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    fault = await _status_fault(sim)
    if fault is None:
        fault = _transient_not_found(sim)
    if fault is not None:
        return fault
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, _body = auth
    training = sim.find(request.match_info["training_id"], owner)
    if training is None:
        return _not_found(sim)
    if training.status == FAILED and training.failure_reason is not None:
        return web.json_response(_failed_status(sim, training))
    return web.json_response({"status": "success", "messege": training.status, "data": training.status_data})


async def cancel_training(request: web.Request) -> web.StreamResponse:
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, _body = auth
    training = sim.find(request.match_info["training_id"], owner)
    if training is None:
        return _not_found(sim)
    if training.stopped:
        return _error(sim, {"status": "error", "messege": ALREADY_FINISHED_MESSAGE}, 400)
    await sim.cancel(training)
    return web.json_response({"status": "success", "messege": "Training cancelled successfully", "data": ""})


async def finetune_list(request: web.Request) -> web.StreamResponse:
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, _body = auth
    trainings = sim.list_trainings(owner)
    if sim.faults.list_shows == "ready":
        trainings = [t for t in trainings if t.reached("model_ready")]
    data: list[Any]
    if sim.faults.list_item_shape == "object":
        data = [{"model_id": t.training_id, "status": t.status} for t in trainings]
    else:
        data = [t.training_id for t in trainings]
    return web.json_response({"status": "success", "messege": "model list", "data": data})


async def finetune_delete(request: web.Request) -> web.StreamResponse:
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, _body = auth
    training = sim.find(request.match_info["training_id"], owner)
    if training is None:
        return _not_found(sim)
    await sim.delete(training)
    return web.json_response({"status": "success", "messege": "Model deleted successfully", "data": ""})


def _crop_flag(value: Any) -> bool | None:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


async def base64_crop(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    body = await _read_json(request)
    if body is None or _owner(sim, body) is None:
        return _invalid_key(sim)
    image = body.get("image")
    if not isinstance(image, str) or not image:
        return _validation_error(sim, {"image": ["The image field is required."]})
    crop = _crop_flag(body.get("crop"))
    if crop is None:
        return _validation_error(sim, {"crop": ["The selected crop is invalid."]})
    try:
        data = parse_data_uri(image)
    except ImageRejected as exc:
        return _error(sim, {"status": "error", "messege": str(exc)}, 400)
    if len(data) > sim.config.max_crop_bytes:
        return _error(sim, {"status": "error", "messege": "The image may not be greater than 5 MB."}, 400)
    try:
        result = await asyncio.to_thread(crop_to_png, data, crop=crop, size=sim.config.crop_size)
    except Exception as exc:
        log.info("base64_crop: undecodable image (%s)", type(exc).__name__)
        return _error(sim, {"status": "error", "messege": "The image could not be decoded."}, 400)
    name = str(10**18 + secrets.randbelow(9 * 10**18))
    sim.generations[name] = Generation(
        name=name,
        data=result.png,
        width=result.width,
        height=result.height,
        source_format=result.source_format,
        cropped=crop,
        created_at=time.time(),
    )
    return web.json_response(
        {"status": "success", "messege": "image uploaded", "link": f"{_origin(sim, request)}/generations/{name}.png"}
    )


def _origin(sim: Simulator, request: web.Request) -> str:
    """The simulator's public base URL: `SimulatorConfig.public_url`, else the request's origin."""
    return sim.config.public_url.rstrip("/") if sim.config.public_url else f"{request.scheme}://{request.host}"


async def generation(request: web.Request) -> web.StreamResponse:
    stored = _sim(request).generations.get(request.match_info["name"])
    if stored is None:
        raise web.HTTPNotFound()
    return web.Response(body=stored.data, content_type="image/png")


# -- v6 image generation -------------------------------------------------------------------------


def _v6_validation_error(sim: Simulator, errors: Errors) -> web.Response:
    """The v6 validation error: `message` (not `messege`), an object or one string."""
    message: Errors | str = errors
    if sim.faults.validation_error_shape == "string":
        message = summarize_errors(errors)
    return _error(sim, {"status": "error", "message": message}, 400)


def _model_not_found(sim: Simulator, name: str) -> web.Response:
    return _error(sim, {"status": "error", "message": f"Model not found: {name}"}, 400)


def _t2i_failure(sim: Simulator, body: dict[str, Any]) -> web.Response:
    faults = sim.faults
    kind = faults.t2i_fail_kind
    message = faults.t2i_fail_message
    if kind == "invalid_key":
        return _invalid_key(sim)
    if kind == "insufficient_credits":
        return _error(sim, dict(INSUFFICIENT_CREDITS_BODY), 402)
    if kind == "queue_full":
        return _error(sim, _queue_full_body(faults.queue_retry_after), 429)
    if kind == "spam_filter":
        return _error(sim, dict(SPAM_FILTER_BODY), 429)
    if kind == "model_not_found":
        name = next((v for v in (body.get("lora_model"), body.get("model_id")) if isinstance(v, str) and v), "")
        return _model_not_found(sim, name)
    if kind == "error_object":
        return _error(sim, {"status": "error", "message": {"prompt": [message]}}, 400)
    if kind == "failed":
        return _error(sim, {"status": "failed", "id": "", "message": message, "output": ""}, 400)
    return _error(sim, {"status": "error", "message": message}, 400)


def _lora_ready(sim: Simulator, name: str, owner: str) -> bool:
    """`name` is a training of this key that reached `model_ready` and was not deleted."""
    training = sim.find(name, owner)
    return training is not None and training.reached("model_ready")


def _generation_answer(sim: Simulator, request: web.Request, generation: ImageGeneration) -> dict[str, Any]:
    """The `text2img` / fetch answer for the generation's current state."""
    if generation.status == GENERATION_FAILED:
        return {"status": "failed", "id": generation.id, "message": generation.failure_message, "output": []}
    origin = _origin(sim, request)
    links = [f"{origin}{PICTURES_PATH}/{name}.png" for name in generation.image_names]
    meta = {
        "model_id": generation.model_id,
        "prompt": generation.prompt,
        "negative_prompt": generation.negative_prompt,
        "W": generation.width,
        "H": generation.height,
        "n_samples": generation.samples,
        "seed": generation.seed,
        "lora": generation.lora_model,
        "lora_strength": generation.lora_strength,
        "safety_checker": generation.safety_checker,
    }
    if generation.status == GENERATION_PROCESSING:
        # A provider that moved names its own (relocated) fetch URL.
        base = origin + (RELOCATED_PREFIX if request.path.startswith(RELOCATED_PREFIX + "/") else "")
        return {
            "status": "processing",
            "tip": PROCESSING_TIP,
            "eta": sim.faults.t2i_eta,
            "message": PROCESSING_MESSAGE,
            "fetch_result": f"{base}{V6_PREFIX}/images/fetch/{generation.id}",
            "id": generation.id,
            "output": [],
            "future_links": links,
            "meta": meta,
        }
    return {
        "status": "success",
        "generationTime": generation.generation_time,
        "id": generation.id,
        "output": links,
        "proxy_links": list(links),
        "nsfw_content_detected": generation.nsfw_content_detected,
        "meta": meta,
    }


async def text2img(request: web.Request) -> web.StreamResponse:
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, body = auth
    if sim.take("t2i_fail"):
        log.info("text2img: failing (fault %s)", sim.faults.t2i_fail_kind)
        return _t2i_failure(sim, body)
    checked = validate_text2img_request(body)
    if isinstance(checked, dict):
        return _v6_validation_error(sim, checked)
    missing = next((name for name in checked.loras if not _lora_ready(sim, name, owner)), None)
    if missing is not None:
        log.info("text2img: lora_model %s is not a ready model of this key", missing)
        return _model_not_found(sim, missing)
    generation = sim.create_generation(owner=owner, request=checked)
    request[_REQUEST_ID] = str(generation.id)
    await sim.answer_generation(generation)
    if sim.take("t2i_hold"):
        generation.answer_held = True
        log.info("generation %d: holding the answer %.1fs (fault)", generation.id, sim.faults.t2i_hold_seconds)
        await sim.hold(sim.faults.t2i_hold_seconds)
    return web.json_response(_generation_answer(sim, request, generation))


def _generation_id(value: Any) -> int | None:
    """The id of a fetch: an integer, or its decimal text (`request_id` is sent as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _fetch_form_missing(sim: Simulator, form: str) -> web.Response | None:
    """The unsupported fetch form (fault `fetch_forms`): a 404 page, as for an unknown route."""
    if sim.faults.fetch_forms in ("both", form):
        return None
    return web.Response(text=NOT_FOUND_HTML, status=404, content_type="text/html")


async def _fetch(sim: Simulator, request: web.Request, owner: str, raw_id: Any) -> web.Response:
    generation_id = _generation_id(raw_id)
    generation = None if generation_id is None else sim.find_generation(generation_id, owner)
    if generation is None:
        return _error(sim, {"status": "error", "message": REQUEST_NOT_FOUND_MESSAGE}, 404)
    generation.fetch_count += 1
    await sim.answer_generation(generation)
    return web.json_response(_generation_answer(sim, request, generation))


async def images_fetch_body(request: web.Request) -> web.StreamResponse:
    """`images/fetch` with `{"key", "request_id"}` (the docs' form)."""
    sim = _sim(request)
    missing = _fetch_form_missing(sim, "body")
    if missing is not None:
        return missing
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, body = auth
    raw_id = body.get("request_id")
    if raw_id is None or raw_id == "":
        return _v6_validation_error(sim, {"request_id": ["The request id field is required."]})
    request[_REQUEST_ID] = str(raw_id)
    return await _fetch(sim, request, owner, raw_id)


async def images_fetch_path(request: web.Request) -> web.StreamResponse:
    """`images/fetch/{id}` with `{"key"}` (the SDK's form, and the `fetch_result` link)."""
    sim = _sim(request)
    missing = _fetch_form_missing(sim, "path")
    if missing is not None:
        return missing
    auth = await _authenticated(request)
    if isinstance(auth, web.Response):
        return auth
    sim, owner, _body = auth
    return await _fetch(sim, request, owner, request.match_info["request_id"])


async def generated_picture(request: web.Request) -> web.StreamResponse:
    """A `text2img` picture; 404 before it is drawn, and once it expired."""
    found = _sim(request).picture(request.match_info["name"])
    if found is not None:
        generation, data = found
        request[_REQUEST_ID] = str(generation.id)
        if data is not None:
            return web.Response(body=data, content_type="image/png")
    return web.Response(text="404: Not Found", status=404)


# -- control endpoints ---------------------------------------------------------------------------


def _control_state(sim: Simulator) -> dict[str, Any]:
    return {"step_seconds": sim.step_seconds, "faults": sim.faults.to_json()}


async def sim_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(_sim(request).snapshot())


async def sim_get_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response(_control_state(_sim(request)))


async def sim_set_faults(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    try:
        updates = json.loads(await request.read() or b"{}")
    except ValueError:
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    if not isinstance(updates, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    try:
        sim.set_faults(**updates)
    except (FaultError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    log.info("fault switches set: %s", ", ".join(sorted(updates)) or "(none)")
    return web.json_response(_control_state(sim))


async def sim_reset(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    await sim.reset()
    log.info("simulator reset")
    return web.json_response(_control_state(sim))


async def sim_advance(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    advanced = sim.advance(request.match_info["training_id"])
    return web.json_response({"advanced": advanced}, status=200 if advanced else 404)


_PROVIDER_ROUTES: Final[tuple[tuple[str, Handler], ...]] = (
    ("/lora_fine_tune", lora_fine_tune),
    ("/fine_tune_status/{training_id}", fine_tune_status),
    ("/cancle_training/{training_id}", cancel_training),
    ("/cancel_training/{training_id}", cancel_training),
    ("/finetune_list", finetune_list),
    ("/finetune/delete/{training_id}", finetune_delete),
    ("/base64_crop", base64_crop),
)
_V6_ROUTES: Final[tuple[tuple[str, Handler], ...]] = (
    ("/images/text2img", text2img),
    ("/images/fetch", images_fetch_body),
    ("/images/fetch/{request_id}", images_fetch_path),
)
#: Provider handlers and the endpoint names recorded in `Simulator.requests`.
_ENDPOINT_NAMES: Final[dict[Any, str]] = {
    lora_fine_tune: "lora_fine_tune",
    fine_tune_status: "fine_tune_status",
    cancel_training: "cancel_training",
    finetune_list: "finetune_list",
    finetune_delete: "finetune_delete",
    base64_crop: "base64_crop",
    text2img: "text2img",
    images_fetch_body: "images_fetch",
    images_fetch_path: "images_fetch",
    generated_picture: "image_download",
}
#: Recorded, but neither redirected nor duplicate-filtered (picture downloads are plain GETs).
_UNGATED_ENDPOINTS: Final[frozenset[str]] = frozenset({"image_download"})


# -- application ---------------------------------------------------------------------------------


def create_app(config: SimulatorConfig) -> web.Application:
    """The simulator as an aiohttp application; its `Simulator` is `app[SIMULATOR_KEY]`."""
    app = web.Application(middlewares=[_record_requests, _provider_gate], client_max_size=8 * 1024 * 1024)
    simulator = Simulator(config)
    app[SIMULATOR_KEY] = simulator

    async def on_startup(_: web.Application) -> None:
        await simulator.start()

    async def on_shutdown(_: web.Application) -> None:
        simulator.begin_shutdown()

    async def on_cleanup(_: web.Application) -> None:
        await simulator.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)

    for prefix in (*API_PREFIXES, *(RELOCATED_PREFIX + p for p in API_PREFIXES)):
        for path, handler in _PROVIDER_ROUTES:
            app.router.add_post(prefix + path, handler)
    for prefix in (V6_PREFIX, RELOCATED_PREFIX + V6_PREFIX):
        for path, handler in _V6_ROUTES:
            app.router.add_post(prefix + path, handler)
    app.router.add_get("/generations/{name}.png", generation)
    app.router.add_get(PICTURES_PATH + "/{name}.png", generated_picture)
    app.router.add_get("/_sim/state", sim_state)
    app.router.add_get("/_sim/faults", sim_get_faults)
    app.router.add_post("/_sim/faults", sim_set_faults)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_post("/_sim/trainings/{training_id}/advance", sim_advance)
    return app


@dataclass
class RunningSimulator:
    """A simulator serving on loopback (from `start_simulator`); an async context manager."""

    url: str
    simulator: Simulator
    app: web.Application
    _runner: web.AppRunner = field(repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.simulator.begin_shutdown()
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    step_seconds: float = 2.0,
    api_key: str | None = None,
    config: SimulatorConfig | None = None,
    access_log: bool = False,
) -> RunningSimulator:
    """Serve a simulator on `host:port` (0 = a free port) in the running event loop.

    `config`, when given, is used as is (its `step_seconds` and `api_key` win over the keywords).
    Use as `async with await start_simulator(step_seconds=0.05) as running: ...`.
    """
    cfg = config if config is not None else SimulatorConfig(api_key=api_key, step_seconds=step_seconds)
    app = create_app(cfg)
    runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=log if access_log else None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    url_host = f"[{host}]" if ":" in host else host
    return RunningSimulator(
        url=f"http://{url_host}:{bound_port}", simulator=app[SIMULATOR_KEY], app=app, _runner=runner
    )


def serve(
    host: str,
    port: int,
    step_seconds: float,
    api_key: str | None,
    faults: Mapping[str, Any] | None = None,
) -> None:
    """Run a simulator until SIGINT/SIGTERM (the `lorabot simulate` command).

    `faults` (switch name -> value, as `POST /_sim/faults` takes them, e.g. from
    `faults.parse_fault_assignments`) are checked before anything starts (`FaultError`) and set
    when the simulator starts.
    """
    if faults:
        check_settings(faults)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, step_seconds, api_key, faults))


async def _serve(
    host: str,
    port: int,
    step_seconds: float,
    api_key: str | None,
    faults: Mapping[str, Any] | None = None,
) -> None:
    if faults:
        check_settings(faults)
    running = await start_simulator(host, port, step_seconds=step_seconds, api_key=api_key, access_log=True)
    if faults:
        try:
            running.simulator.set_faults(**faults)
        except BaseException:
            await running.close()
            raise
        step_seconds = running.simulator.step_seconds
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info(
        "provider simulator listening on %s (point the bot at it with SDAPI_BASE_URL=%s)", running.url, running.url
    )
    log.info(
        "step every %.2fs; %s; control endpoints under %s/_sim/",
        step_seconds,
        "only the configured API key is accepted" if api_key else "any non-empty API key is accepted",
        running.url,
    )
    if faults:
        log.info("fault switches at start: %s", ", ".join(f"{name}={faults[name]!r}" for name in sorted(faults)))
    try:
        await stop.wait()
    finally:
        log.info("provider simulator stopping")
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        await running.close()
