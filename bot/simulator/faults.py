"""Fault switches of the provider simulator.

One mutable `Faults` object lives on the `Simulator`. Tests in the same process may set its
attributes directly; `apply_fault_updates` is the checked path used by `Simulator.set_faults`
and by the HTTP control endpoint `POST /_sim/faults`, so a simulator in another process can be
driven with the same names and the same JSON values.

Counters ("next N ...") are decremented as they are used and stop at zero.

Besides the transport faults (held answers, 5xx pages, lost or reordered webhooks) there are
switches for the provider's ambiguous answers: a status call that briefly says "not found" for a
training that exists, the two kinds of "Rate limit exceeded" refusal (a full queue with
`retry_after`, and a duplicate-request spam filter, also enforced for real with
`duplicate_window_seconds`), failures that only polling reveals, in three status shapes, only one
accepted spelling of the women training type, validation errors as an object or a plain string, a
provider that moved (3xx to `/relocated`) and the shapes of the trained model list. The `t2i_*`
switches, `fetch_forms` and `image_ttl_seconds` act on the v6 image generation endpoints.

`parse_fault_assignments` turns `NAME=VALUE` strings (the command line) into the same updates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit

from bot.jobs.training_api import KNOWN_TRAINING_STATUSES

#: The eight documented v3 training statuses, in the order the provider walks them.
STATUSES: Final[tuple[str, ...]] = KNOWN_TRAINING_STATUSES
#: The status word the simulator uses for a failed run (none is documented for v3).
FAILED: Final = "failed"

SubmissionFailureKind = Literal[
    "failed", "error", "invalid_key", "insufficient_credits", "queue_full", "spam_filter", "rate_limited"
]
ReorderMode = Literal["none", "swap_pairs", "reverse"]
StatusErrorMode = Literal["500", "502", "503", "hang"]
NotFoundShape = Literal["json", "html", "json_200"]
FailureStatusShape = Literal["messege_failed", "status_failed", "status_error"]
WomanSpelling = Literal["both", "female", "women"]
ValidationErrorShape = Literal["object", "string"]
ListShows = Literal["all", "ready"]
ListItemShape = Literal["string", "object"]
T2IFailureKind = Literal[
    "error_string",
    "error_object",
    "failed",
    "queue_full",
    "spam_filter",
    "invalid_key",
    "insufficient_credits",
    "model_not_found",
]
NsfwMode = Literal["none", "all", "first"]
FetchForms = Literal["both", "body", "path"]

SUBMISSION_FAILURE_KINDS: Final[tuple[str, ...]] = get_args(SubmissionFailureKind)
REORDER_MODES: Final[tuple[str, ...]] = get_args(ReorderMode)
STATUS_ERROR_MODES: Final[tuple[str, ...]] = get_args(StatusErrorMode)
NOT_FOUND_SHAPES: Final[tuple[str, ...]] = get_args(NotFoundShape)
FAILURE_STATUS_SHAPES: Final[tuple[str, ...]] = get_args(FailureStatusShape)
WOMAN_SPELLINGS: Final[tuple[str, ...]] = get_args(WomanSpelling)
VALIDATION_ERROR_SHAPES: Final[tuple[str, ...]] = get_args(ValidationErrorShape)
LIST_SHOWS: Final[tuple[str, ...]] = get_args(ListShows)
LIST_ITEM_SHAPES: Final[tuple[str, ...]] = get_args(ListItemShape)
T2I_FAILURE_KINDS: Final[tuple[str, ...]] = get_args(T2IFailureKind)
NSFW_MODES: Final[tuple[str, ...]] = get_args(NsfwMode)
FETCH_FORMS: Final[tuple[str, ...]] = get_args(FetchForms)
#: The redirect codes `redirect_status` takes (301/302 turn a POST into a GET in most clients).
REDIRECT_STATUSES: Final[tuple[int, ...]] = (301, 302, 307, 308)
#: Names `Simulator.set_faults`, `POST /_sim/faults` and `serve(faults=...)` take besides the switches.
EXTRA_SETTINGS: Final[frozenset[str]] = frozenset({"step_seconds"})


class FaultError(ValueError):
    """A fault switch was given a name or a value it does not take."""


@dataclass
class Faults:
    """Every fault switch, with its default (a well-behaved provider)."""

    #: Errors use the HTTP codes of the ModelsLab docs (400/401/402/404/429) instead of HTTP 200.
    error_http_status: bool = False

    #: The next N `lora_fine_tune` calls answer an error of `fail_submission_kind` (and create nothing).
    fail_submission: int = 0
    #: `failed`: `{"status":"failed","id":"","message":<message>,"output":""}` (the SDA generic shape);
    #: `error`: `{"status":"error","messege":<message>}`; `invalid_key` and `insufficient_credits`
    #: answer the documented bodies of those errors; `queue_full`: `{"status":"error","message":
    #: "Rate limit exceeded. Maximum 5 queued requests allowed.","retry_after":<queue_retry_after>}`
    #: (the per-account queue limit); `spam_filter`: `{"status":"error","message":"Rate limit
    #: exceeded","tips":"you are sending same request multiple times, ..."}` (the duplicate-request
    #: filter). HTTP 401/402/429/429 when `error_http_status`; `failed` and `error` use 400.
    #: `rate_limited` is the old name of `queue_full` and is normalised to it when set.
    fail_submission_kind: SubmissionFailureKind = "failed"
    fail_submission_message: str = "Failed, Try Again"
    #: The `retry_after` seconds of the `queue_full` answer (sent as a JSON integer when integral).
    queue_retry_after: float = 30

    #: When > 0, a request to any provider endpoint whose path and JSON body (canonicalised, keys
    #: sorted) equal those of a request accepted less than this many seconds earlier is refused
    #: with the `spam_filter` body (429 when `error_http_status`, else 200) and does nothing. The
    #: window runs from the last accepted copy, so the first copy was processed normally (for
    #: `lora_fine_tune`: the training exists). 0 = off.
    duplicate_window_seconds: float = 0

    #: The next N `lora_fine_tune` calls create the training (it starts walking and sending
    #: webhooks) but hold the HTTP answer for `hold_seconds`, so the client times out.
    timeout_submission: int = 0
    hold_seconds: float = 120.0

    #: Webhooks not sent: False (none), True (all), a set of status words, or a probability in
    #: [0, 1] drawn from a `random.Random(drop_seed)` (reseeded whenever faults are set).
    drop_webhooks: bool | float | Set[str] = False
    drop_seed: int = 0
    #: Each webhook is sent this many times (1 = once).
    duplicate_webhooks: int = 1
    #: `none`; `swap_pairs`: steps are paired (1st+2nd, 3rd+4th, ...), the first of a pair is held
    #: and sent right after the second; `reverse`: every webhook is held and the whole walk is sent
    #: in reverse order when the run ends (model_ready or failed).
    reorder_webhooks: ReorderMode = "none"
    #: Extra attempts after a failed delivery (connection error, timeout, non-2xx). 0 = no retries.
    webhook_retries: int = 0
    webhook_retry_delay: float = 0.5

    #: The next N trainings fail where they would have entered `fail_training_at`.
    fail_training: int = 0
    fail_training_at: str = "training_success"
    fail_training_reason: str = "Training failed: the GPU worker crashed. Please try again."
    #: False: a failing training sends no webhook for its failure step (the steps before still
    #: send theirs), so only polling shows the failure.
    failure_webhook: bool = True
    #: How `fine_tune_status` reports a failed training, always HTTP 200: `messege_failed`:
    #: `{"status":"success","messege":"failed","data":<reason>}`; `status_failed`:
    #: `{"status":"failed","messege":<reason>}`; `status_error`: `{"status":"error","message":<reason>}`.
    failure_status_shape: FailureStatusShape = "messege_failed"

    #: The next N trainings stop moving once they reach `stall_at` (no more webhooks, the status
    #: stays there) until cancelled, deleted or advanced with `Simulator.advance`.
    stall_training: int = 0
    stall_at: str = "training_started"

    #: The next N `fine_tune_status` calls fail: HTTP 500 or 503 (JSON error body), 502 (an HTML
    #: proxy page), or `hang` (no answer for `status_hang_seconds`, then the normal answer).
    status_errors: int = 0
    status_error_mode: StatusErrorMode = "500"
    status_hang_seconds: float = 30.0

    #: The next N `fine_tune_status` calls (checked before the key, after `status_errors`) answer
    #: "not found" although the training exists, in `status_not_found_shape`: `json`: HTTP 404
    #: `{"status":"error","messege":"Training ID does not exist"}`; `html`: HTTP 404 with an nginx
    #: error page (text/html); `json_200`: the same JSON with HTTP 200.
    status_not_found: int = 0
    status_not_found_shape: NotFoundShape = "json"

    #: `both`: `training_type` may be `female`, `women` or `femal`. `female` / `women`: only that
    #: spelling; a `lora_fine_tune` with another of the three is a validation error (nothing created).
    woman_spelling: WomanSpelling = "both"
    #: Validation errors (`lora_fine_tune`, `base64_crop`) as `object`: `{"status":"error","messege":
    #: {"training_type":["The selected training type is invalid."]}}` or as `string`:
    #: `{"status":"error","messege":"The selected training type is invalid."}` (the first message;
    #: with more, Laravel's " (and N more errors)" suffix). HTTP 400 when `error_http_status`.
    validation_error_shape: ValidationErrorShape = "object"

    #: While set (301, 302, 307 or 308), every provider request under `/api/` answers that redirect
    #: with `Location: <redirect_target><path>` and does nothing else. The same endpoints are
    #: served, never redirected, under `/relocated/api/v3` and `/relocated/api/sandbox/v3`.
    redirect_status: int | None = None
    #: An absolute http(s) base URL; None = the simulator's own origin + `/relocated`.
    redirect_target: str | None = None

    #: `finetune_list`: `all` trainings of the key, or only those that reached `model_ready`
    #: (`ready`, as the docs call it the trained model list). Items are the id `string`, or an
    #: `object` `{"model_id": <id>, "status": <its current status>}`.
    list_shows: ListShows = "all"
    list_item_shape: ListItemShape = "string"

    #: While set, every new training walks one extra step with this undocumented status word,
    #: right after `unknown_status_after` (which may be `model_ready`: a late step after the end).
    unknown_status_word: str | None = None
    unknown_status_after: str = "deploying_gpu"
    #: While set, the `lora_fine_tune` success answer carries this word as its `messege` instead
    #: of `deploying_gpu` (the training itself is created and walks as usual).
    create_status_word: str | None = None

    # -- v6 image generation (`images/text2img`, `images/fetch`) --------------------------------

    #: How many `processing` answers a generation gives before `success`: the first is the
    #: `text2img` answer itself, the rest are fetches. 0 = `text2img` answers `success` at once.
    t2i_processing_steps: int = 1
    #: The `eta` (seconds) of `processing` answers.
    t2i_eta: float = 2.0
    #: The next N `text2img` calls (after the key check) answer an error of `t2i_fail_kind` and
    #: create nothing. `error_string`: `{"status":"error","message":<message>}`; `error_object`:
    #: `{"status":"error","message":{"prompt":[<message>]}}`; `failed`: `{"status":"failed","id":"",
    #: "message":<message>,"output":""}`; `queue_full`: the queue-limit refusal with `retry_after`
    #: from `queue_retry_after`; `spam_filter`: the duplicate-request refusal; `invalid_key` and
    #: `insufficient_credits`: those documented bodies; `model_not_found`: `{"status":"error",
    #: "message":"Model not found: <lora_model or model_id>"}`. HTTP 400/400/400/429/429/401/402/400
    #: when `error_http_status`.
    t2i_fail: int = 0
    t2i_fail_kind: T2IFailureKind = "error_string"
    t2i_fail_message: str = "Failed, Try Again"
    #: The next N generations fail while processing: the answer that would have been `success`
    #: (a fetch, or `text2img` itself with no processing steps) is `{"status":"failed","id":<id>,
    #: "message":<t2i_fail_processing_message>,"output":[]}`, and so is every later fetch.
    t2i_fail_processing: int = 0
    t2i_fail_processing_message: str = "Image generation failed. Please try again."
    #: Outputs of new generations flagged NSFW: `none` (`nsfw_content_detected: false`), `all`
    #: (`true`) or `first` (a list of booleans, only the first image flagged). Flagged images are
    #: still served as they are, whatever `safety_checker` says (the docs do not say what happens).
    t2i_nsfw: NsfwMode = "none"
    #: The next N generations stay `processing` for ever (every fetch answers `processing`).
    t2i_never_finishes: int = 0
    #: Seconds an output link (`/generations/img/<name>.png`) lives after its generation
    #: finished; then it answers 404 and the image is dropped from memory.
    image_ttl_seconds: float = 3600.0
    #: Which fetch form is served: `both`, `body` (`images/fetch` with `request_id` in the body)
    #: or `path` (`images/fetch/{id}`). The other form answers HTTP 404 with an nginx HTML page.
    fetch_forms: FetchForms = "both"
    #: The next N `text2img` calls create the generation but hold the HTTP answer for
    #: `t2i_hold_seconds` (so a client times out and does not know whether it was accepted).
    t2i_hold: int = 0
    t2i_hold_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Set):
                value = sorted(value)
            out[f.name] = value
        return out


FAULT_NAMES: Final[frozenset[str]] = frozenset(f.name for f in fields(Faults))


def _int(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise FaultError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FaultError(f"{name} must be a number, got {value!r}")
    if value < minimum:
        raise FaultError(f"{name} must be >= {minimum}, got {value}")
    return float(value)


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FaultError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise FaultError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _status(name: str, value: Any) -> str:
    return _choice(name, value, STATUSES)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FaultError(f"{name} must be true or false, got {value!r}")
    return value


def _drop(value: Any) -> bool | float | frozenset[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        probability = _float("drop_webhooks", value)
        if probability > 1:
            raise FaultError(f"drop_webhooks as a probability must be within [0, 1], got {value}")
        return probability
    if isinstance(value, (list, tuple, set, frozenset)):
        words = [_str("drop_webhooks[]", v) for v in value]
        return frozenset(words)
    raise FaultError(f"drop_webhooks must be true/false, a probability or a list of status words, got {value!r}")


def _reorder(value: Any) -> str:
    if value is True:
        return "swap_pairs"
    if value is False or value is None:
        return "none"
    return _choice("reorder_webhooks", value, REORDER_MODES)


def _duplicate(value: Any) -> int:
    if value is True:
        return 2
    if value is False:
        return 1
    return max(1, _int("duplicate_webhooks", value))


def _status_mode(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _choice("status_error_mode", value, STATUS_ERROR_MODES)


def _optional_word(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _str("unknown_status_word", value)


def _submission_kind(value: Any) -> str:
    kind = _choice("fail_submission_kind", value, SUBMISSION_FAILURE_KINDS)
    return "queue_full" if kind == "rate_limited" else kind


def _redirect_status(value: Any) -> int | None:
    if value is None or value == "" or value is False:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in REDIRECT_STATUSES:
        allowed = ", ".join(map(str, REDIRECT_STATUSES))
        raise FaultError(f"redirect_status must be one of {allowed} or null, got {value!r}")
    return value


def _redirect_target(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = _str("redirect_target", value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise FaultError(f"redirect_target must be an absolute http(s) base URL, got {value!r}")
    return text.rstrip("/")


_PARSERS: Final[dict[str, Any]] = {
    "error_http_status": lambda v: _bool("error_http_status", v),
    "fail_submission": lambda v: _int("fail_submission", v),
    "fail_submission_kind": _submission_kind,
    "fail_submission_message": lambda v: _str("fail_submission_message", v),
    "queue_retry_after": lambda v: _float("queue_retry_after", v),
    "duplicate_window_seconds": lambda v: _float("duplicate_window_seconds", v),
    "timeout_submission": lambda v: _int("timeout_submission", v),
    "hold_seconds": lambda v: _float("hold_seconds", v),
    "drop_webhooks": _drop,
    "drop_seed": lambda v: _int("drop_seed", v, minimum=-(2**63)),
    "duplicate_webhooks": _duplicate,
    "reorder_webhooks": _reorder,
    "webhook_retries": lambda v: _int("webhook_retries", v),
    "webhook_retry_delay": lambda v: _float("webhook_retry_delay", v),
    "fail_training": lambda v: _int("fail_training", v),
    "fail_training_at": lambda v: _status("fail_training_at", v),
    "fail_training_reason": lambda v: _str("fail_training_reason", v),
    "failure_webhook": lambda v: _bool("failure_webhook", v),
    "failure_status_shape": lambda v: _choice("failure_status_shape", v, FAILURE_STATUS_SHAPES),
    "stall_training": lambda v: _int("stall_training", v),
    "stall_at": lambda v: _status("stall_at", v),
    "status_errors": lambda v: _int("status_errors", v),
    "status_error_mode": _status_mode,
    "status_hang_seconds": lambda v: _float("status_hang_seconds", v),
    "status_not_found": lambda v: _int("status_not_found", v),
    "status_not_found_shape": lambda v: _choice("status_not_found_shape", v, NOT_FOUND_SHAPES),
    "woman_spelling": lambda v: _choice("woman_spelling", v, WOMAN_SPELLINGS),
    "validation_error_shape": lambda v: _choice("validation_error_shape", v, VALIDATION_ERROR_SHAPES),
    "redirect_status": _redirect_status,
    "redirect_target": _redirect_target,
    "list_shows": lambda v: _choice("list_shows", v, LIST_SHOWS),
    "list_item_shape": lambda v: _choice("list_item_shape", v, LIST_ITEM_SHAPES),
    "unknown_status_word": _optional_word,
    "unknown_status_after": lambda v: _status("unknown_status_after", v),
    "create_status_word": lambda v: None if v is None or v == "" else _str("create_status_word", v),
    "t2i_processing_steps": lambda v: _int("t2i_processing_steps", v),
    "t2i_eta": lambda v: _float("t2i_eta", v),
    "t2i_fail": lambda v: _int("t2i_fail", v),
    "t2i_fail_kind": lambda v: _choice("t2i_fail_kind", v, T2I_FAILURE_KINDS),
    "t2i_fail_message": lambda v: _str("t2i_fail_message", v),
    "t2i_fail_processing": lambda v: _int("t2i_fail_processing", v),
    "t2i_fail_processing_message": lambda v: _str("t2i_fail_processing_message", v),
    "t2i_nsfw": lambda v: _choice("t2i_nsfw", v, NSFW_MODES),
    "t2i_never_finishes": lambda v: _int("t2i_never_finishes", v),
    "image_ttl_seconds": lambda v: _float("image_ttl_seconds", v),
    "fetch_forms": lambda v: _choice("fetch_forms", v, FETCH_FORMS),
    "t2i_hold": lambda v: _int("t2i_hold", v),
    "t2i_hold_seconds": lambda v: _float("t2i_hold_seconds", v),
}
assert set(_PARSERS) == FAULT_NAMES, "every fault switch needs a parser"


def parse_fault_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise switch values; raises `FaultError` naming the first bad one."""
    unknown = sorted(set(updates) - FAULT_NAMES)
    if unknown:
        raise FaultError(f"unknown fault switch(es): {', '.join(unknown)}; known: {', '.join(sorted(FAULT_NAMES))}")
    parsed = {name: _PARSERS[name](value) for name, value in updates.items()}
    word = parsed.get("unknown_status_word")
    if isinstance(word, str) and word in STATUSES:
        raise FaultError(f"unknown_status_word must not be one of the documented statuses, got {word!r}")
    return parsed


def apply_fault_updates(faults: Faults, updates: Mapping[str, Any]) -> None:
    """Validate every update first, then apply them all (all or nothing)."""
    for name, value in parse_fault_updates(updates).items():
        setattr(faults, name, cast(object, value))


def check_step_seconds(value: Any) -> float:
    """The `step_seconds` setting accepted next to the switches (a number >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise FaultError(f"step_seconds must be a number >= 0, got {value!r}")
    return float(value)


def check_settings(updates: Mapping[str, Any]) -> None:
    """Check switches plus `step_seconds` (what `Simulator.set_faults` takes); raises `FaultError`."""
    rest = dict(updates)
    if "step_seconds" in rest:
        check_step_seconds(rest.pop("step_seconds"))
    parse_fault_updates(rest)


def _decode_assignment_value(name: str, text: str) -> Any:
    """JSON first; the raw text when it is not JSON, or when only the text is a valid value."""
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    if isinstance(decoded, str) or name not in _PARSERS:
        return decoded
    try:
        _PARSERS[name](decoded)
    except FaultError:
        try:
            _PARSERS[name](text)
        except FaultError:
            return decoded
        return text  # e.g. fail_submission_message=404: a message, not a number
    return decoded


def parse_fault_assignments(items: Sequence[str]) -> dict[str, Any]:
    """Turn `NAME=VALUE` strings (`lorabot simulate --fault ...`) into checked switch updates.

    VALUE is read as JSON (`2`, `true`, `null`, `["deploying_gpu"]`, `"text"`), else taken as
    plain text (`queue_full`). A later item for the same name wins. Names and values are checked
    like `POST /_sim/faults` (`step_seconds` is accepted too); the values are returned as decoded,
    ready for `Simulator.set_faults(**...)` or `serve(..., faults=...)`. Raises `FaultError`.
    """
    if isinstance(items, str):
        raise FaultError("fault assignments must be a list of NAME=VALUE strings, not one string")
    updates: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise FaultError(f"a fault assignment must be a NAME=VALUE string, got {item!r}")
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise FaultError(f"malformed fault assignment {item!r}: expected NAME=VALUE, e.g. status_not_found=2")
        if name not in FAULT_NAMES and name not in EXTRA_SETTINGS:
            raise FaultError(f"malformed fault assignment {item!r}: unknown fault switch {name!r}")
        value = _decode_assignment_value(name, text.strip())
        try:
            if name in EXTRA_SETTINGS:
                check_step_seconds(value)
            else:
                _PARSERS[name](value)
        except FaultError as exc:
            raise FaultError(f"bad fault assignment {item!r}: {exc}") from None
        updates[name] = value
    check_settings(updates)
    return updates
