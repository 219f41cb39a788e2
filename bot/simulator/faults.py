"""Fault switches of the provider simulator.

One mutable `Faults` object lives on the `Simulator`. Tests in the same process may set its
attributes directly; `apply_fault_updates` is the checked path used by `Simulator.set_faults`
and by the HTTP control endpoint `POST /_sim/faults`, so a simulator in another process can be
driven with the same names and the same JSON values.

Counters ("next N ...") are decremented as they are used and stop at zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, cast, get_args

from bot.provider.models import KNOWN_TRAINING_STATUSES

#: The eight documented v3 training statuses, in the order the provider walks them.
STATUSES: Final[tuple[str, ...]] = KNOWN_TRAINING_STATUSES
#: The status word the simulator uses for a failed run (none is documented for v3).
FAILED: Final = "failed"

SubmissionFailureKind = Literal["failed", "error", "invalid_key", "insufficient_credits", "rate_limited"]
ReorderMode = Literal["none", "swap_pairs", "reverse"]
StatusErrorMode = Literal["500", "502", "503", "hang"]

SUBMISSION_FAILURE_KINDS: Final[tuple[str, ...]] = get_args(SubmissionFailureKind)
REORDER_MODES: Final[tuple[str, ...]] = get_args(ReorderMode)
STATUS_ERROR_MODES: Final[tuple[str, ...]] = get_args(StatusErrorMode)


class FaultError(ValueError):
    """A fault switch was given a name or a value it does not take."""


@dataclass
class Faults:
    """Every fault switch, with its default (a well-behaved provider)."""

    #: Errors use the HTTP codes of the ModelsLab docs (400/401/402/404/429) instead of HTTP 200.
    error_http_status: bool = False

    #: The next N `lora_fine_tune` calls answer an error of `fail_submission_kind`.
    fail_submission: int = 0
    #: `failed`: `{"status":"failed","id":"","message":<message>,"output":""}` (the SDA generic shape);
    #: `error`: `{"status":"error","messege":<message>}`; `invalid_key`, `insufficient_credits` and
    #: `rate_limited` answer the documented bodies of those errors (HTTP 401/402/429 when
    #: `error_http_status`; `failed` and `error` use 400).
    fail_submission_kind: SubmissionFailureKind = "failed"
    fail_submission_message: str = "Failed, Try Again"

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

    #: The next N trainings stop moving once they reach `stall_at` (no more webhooks, the status
    #: stays there) until cancelled, deleted or advanced with `Simulator.advance`.
    stall_training: int = 0
    stall_at: str = "training_started"

    #: The next N `fine_tune_status` calls fail: HTTP 500 or 503 (JSON error body), 502 (an HTML
    #: proxy page), or `hang` (no answer for `status_hang_seconds`, then the normal answer).
    status_errors: int = 0
    status_error_mode: StatusErrorMode = "500"
    status_hang_seconds: float = 30.0

    #: While set, every new training walks one extra step with this undocumented status word,
    #: right after `unknown_status_after` (which may be `model_ready`: a late step after the end).
    unknown_status_word: str | None = None
    unknown_status_after: str = "deploying_gpu"

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


_PARSERS: Final[dict[str, Any]] = {
    "error_http_status": lambda v: _bool("error_http_status", v),
    "fail_submission": lambda v: _int("fail_submission", v),
    "fail_submission_kind": lambda v: _choice("fail_submission_kind", v, SUBMISSION_FAILURE_KINDS),
    "fail_submission_message": lambda v: _str("fail_submission_message", v),
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
    "stall_training": lambda v: _int("stall_training", v),
    "stall_at": lambda v: _status("stall_at", v),
    "status_errors": lambda v: _int("status_errors", v),
    "status_error_mode": _status_mode,
    "status_hang_seconds": lambda v: _float("status_hang_seconds", v),
    "unknown_status_word": _optional_word,
    "unknown_status_after": lambda v: _status("unknown_status_after", v),
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
