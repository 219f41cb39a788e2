"""Request and response types for the Stable Diffusion API (ModelsLab) v3 LoRA training endpoints.

The provider's documentation is loose (see ``docs/provider.md``), so the parsers here are
tolerant: ``messege`` and ``message``, ``training_id``/``model_id``/``id``, a log ``data`` string
with literal `` /n `` separators or real newlines, or a list of lines.

Nothing in this module knows the API key. Payloads kept in ``raw`` are copied through
:func:`redact`, which drops ``key``-like fields; the client also masks the key's value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

TrainingType = Literal["men", "female", "women", "couple", "null"]
BaseModelType = Literal["normal", "sdxl"]
LoraType = Literal["lora", "lycoris"]

#: The LoRA page's example negative prompt, leading space included, exactly as documented.
DEFAULT_NEGATIVE_PROMPT: Final[str] = (
    " lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
    "username, blurry"
)

#: The eight documented v3 training statuses, in the order a training moves through them.
#: No failure or cancelled status is documented for v3.
KNOWN_TRAINING_STATUSES: Final[tuple[str, ...]] = (
    "deploying_gpu",
    "training_started",
    "training_success",
    "trained_model_compressing",
    "trained_model_uploading",
    "trained_model_uploaded",
    "deploying_model",
    "model_ready",
)

#: The provider refuses a request identical to one it received this many seconds before.
DUPLICATE_WINDOW_SECONDS: Final = 30.0

#: What :attr:`TrainingStatus.status` holds when the payload carries no status word at all.
UNKNOWN_STATUS: Final[str] = "unknown"
#: What :attr:`TrainingStatus.status` holds when the provider reports that the training failed.
#: No failure status is documented for v3; see :meth:`TrainingStatus.from_payload`.
FAILED_STATUS: Final[str] = "failed"
#: Body ``status`` values of a failure answer (the generic error payloads, and v6's words).
FAILURE_BODY_STATUSES: Final = frozenset({"error", "failed", "failure", "fail"})
#: Status words that mean the *training* failed, wherever they appear.
FAILURE_STATUS_WORDS: Final = frozenset({"failed", "failure", "error", "training_failed", "training_cancelled"})

#: Field names that hold credentials in requests or echoes; never kept in ``raw``.
_SECRET_FIELDS: Final = frozenset({"key", "api_key", "apikey", "wandb_key", "hf_token"})
REDACTED: Final[str] = "[redacted]"
#: Secrets shorter than this are not masked inside free text (they would mangle ordinary words).
_MIN_MASKABLE_SECRET: Final = 4

# A literal "/n" used as a line separator: at the start or after whitespace, and followed by
# whitespace or the end. "https://x/n..." is left alone. Real newlines separate lines too.
_LOG_SEPARATOR: Final = re.compile(r"(?:^|\s)/n(?=\s|$)|\r\n|\r|\n")
_ETA: Final = re.compile(r"\bETA\s*:\s*([^,;\n]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TrainingRequest:
    """Everything ``POST /api/v3/lora_fine_tune`` needs, apart from the API key.

    ``images`` must be direct, publicly reachable image URLs (the provider wants 512x512 crops).
    ``webhook`` is left out of ``repr`` because the bot's webhook URLs carry a per-job secret.
    """

    instance_prompt: str
    class_prompt: str
    images: tuple[str, ...]
    base_model_type: BaseModelType = "sdxl"
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    seed: int | None = None
    training_type: str = "men"
    lora_type: LoraType = "lora"
    max_train_steps: int = 20
    webhook: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Accept any iterable of URLs (a list is the common mistake) but store a tuple.
        images: object = self.images
        if not isinstance(images, tuple):
            object.__setattr__(self, "images", tuple(self.images))
        if not self.images:
            raise ValueError("a training needs at least one image URL")
        if self.max_train_steps < 1:
            raise ValueError("max_train_steps must be a positive integer")

    def to_body(self, key: str) -> dict[str, object]:
        """The documented JSON body: key included, numbers as strings, webhook URL or ``null``."""
        return {
            "key": key,
            "instance_prompt": self.instance_prompt,
            "class_prompt": self.class_prompt,
            "base_model_type": self.base_model_type,
            "negative_prompt": self.negative_prompt,
            "images": list(self.images),
            "seed": "0" if self.seed is None else str(self.seed),
            "training_type": self.training_type,
            "max_train_steps": str(self.max_train_steps),
            "lora_type": self.lora_type,
            "webhook": self.webhook or None,
        }


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The provider accepted a training: ``{"status":"success","messege":"deploying_gpu",...}``."""

    training_id: str
    status: str
    eta_text: str | None
    raw: Mapping[str, Any] = field(hash=False)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SubmitResult:
        """Parse a create response. Raises ``ValueError`` when it carries no training id."""
        training_id = extract_training_id(payload)
        if training_id is None:
            raise ValueError("the response carries no training id")
        data = payload.get("data")
        eta_text = (data.strip() or None) if isinstance(data, str) else None
        return cls(
            training_id=training_id,
            status=status_word(payload),
            eta_text=eta_text,
            raw=freeze(redact(payload)),
        )


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """A ``fine_tune_status`` answer (a webhook body parses the same way).

    ``status`` is the stripped, lower-cased status word (``"model_ready"``), :data:`FAILED_STATUS`
    when the provider says the training failed, or :data:`UNKNOWN_STATUS`. ``log_lines`` is the
    ``data`` log split into lines, and ``eta`` the last ``ETA : <x>`` found in it (``"5 minutes"``),
    else ``None``. ``failure_reason`` is the provider's explanation of a failed training.
    """

    status: str
    log_lines: tuple[str, ...]
    eta: str | None
    raw: Mapping[str, Any] = field(hash=False)
    failure_reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED_STATUS

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrainingStatus:
        """Parse a status answer or webhook body.

        A failed training comes in two shapes, since none is documented: a failure body
        (``{"status": "failed" | "error", "messege": <reason>}``), or a success body whose status
        word is a failure word (``{"status": "success", "messege": "failed", "data": <reason>}``).
        The client has already told a failed *call* apart from these (see ``ProviderClient``).
        """
        data = payload.get("data")
        if data is None:
            data = payload.get("logs")  # the webhook body's name for the same text
        lines = split_log(data)
        word = status_word(payload)
        body_status = payload.get("status")
        failure_body = isinstance(body_status, str) and body_status.strip().lower() in FAILURE_BODY_STATUSES
        reason: str | None = None
        if failure_body or word in FAILURE_STATUS_WORDS:
            message = message_text(payload)
            if message and message.strip().lower() not in FAILURE_STATUS_WORDS:
                reason = message
            elif lines:
                reason = " ".join(lines[-3:])
            word = FAILED_STATUS
        return cls(
            status=word,
            log_lines=lines,
            eta=extract_eta(lines),
            raw=freeze(redact(payload)),
            failure_reason=reason[:1000] if reason else None,
        )


# --------------------------------------------------------------------------- parsing helpers


def status_word(payload: Mapping[str, Any]) -> str:
    """The status word: ``training_status`` (webhooks), ``messege`` or ``message``, else ``data.status``."""
    for name in ("training_status", "messege", "message"):
        value = payload.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    data = payload.get("data")
    if isinstance(data, Mapping):
        value = data.get("status")
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    return UNKNOWN_STATUS


def extract_training_id(payload: Mapping[str, Any]) -> str | None:
    """The first non-empty of ``training_id``, ``model_id``, ``id`` (integers become strings)."""
    for name in ("training_id", "model_id", "id"):
        value = payload.get(name)
        text = id_text(value)
        if text is not None:
            return text
    return None


def id_text(value: object) -> str | None:
    """A usable id from a JSON value: a non-blank string or an integer, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def split_log(data: object) -> tuple[str, ...]:
    """Split a status log on literal `` /n `` separators and real newlines; drop blank lines."""
    if data is None:
        return ()
    chunks: Iterable[object]
    if isinstance(data, str):
        chunks = (data,)
    elif isinstance(data, list | tuple):
        chunks = data
    elif isinstance(data, Mapping):
        chunks = tuple(data[name] for name in ("logs", "log") if isinstance(data.get(name), str))
    else:
        chunks = (data,)
    lines: list[str] = []
    for chunk in chunks:
        if chunk is None:
            continue
        text = chunk if isinstance(chunk, str) else _compact(chunk)
        lines.extend(part.strip() for part in _LOG_SEPARATOR.split(text) if part.strip())
    return tuple(lines)


def extract_eta(lines: Iterable[str]) -> str | None:
    """The last ``ETA : <x>`` value in the log lines (``"15 minutes"``), else ``None``."""
    eta: str | None = None
    for line in lines:
        for match in _ETA.finditer(line):
            value = match.group(1).strip().rstrip(".").strip()
            if value:
                eta = value
    return eta


def flatten_message(value: object) -> str | None:
    """Readable text from a provider message: a string, a list, or ``{"field": ["error", ...]}``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping):
        parts = []
        for name, inner in value.items():
            text = flatten_message(inner)
            parts.append(f"{name}: {text}" if text else str(name))
        return "; ".join(parts) or None
    if isinstance(value, list | tuple):
        return " ".join(text for item in value if (text := flatten_message(item))) or None
    return str(value)


def message_text(payload: Mapping[str, Any]) -> str | None:
    """The provider's message (``message``, ``messege``, ``error`` or ``detail``), flattened."""
    for name in ("message", "messege", "error", "detail"):
        text = flatten_message(payload.get(name))
        if text:
            return text
    return None


def tip_text(payload: Mapping[str, Any]) -> str | None:
    """The provider's hint (``tip``, ``tips`` or ``tip_1``), flattened."""
    for name in ("tip", "tips", "tip_1"):
        text = flatten_message(payload.get(name))
        if text:
            return text
    return None


def mask(text: str, secret: str | None) -> str:
    """Replace every occurrence of ``secret`` in ``text`` with ``[redacted]``."""
    if secret and len(secret) >= _MIN_MASKABLE_SECRET and secret in text:
        return text.replace(secret, REDACTED)
    return text


def redact(value: Any, secret: str | None = None) -> Any:
    """A deep copy of a JSON value without ``key``-like fields and with ``secret`` masked."""
    if isinstance(value, Mapping):
        return {
            mask(str(name), secret): redact(inner, secret)
            for name, inner in value.items()
            if str(name).lower() not in _SECRET_FIELDS
        }
    if isinstance(value, list | tuple):
        return [redact(item, secret) for item in value]
    if isinstance(value, str):
        return mask(value, secret)
    return value


def freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a mapping (its nested values stay plain JSON values)."""
    return MappingProxyType(dict(value))


def _compact(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)
