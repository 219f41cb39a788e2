"""Request and answer types of the provider's v6 image generation with a trained LoRA.

``POST /api/v6/images/text2img`` generates pictures with a base checkpoint (``model_id``) and a
trained LoRA (``lora_model``, the training id). It answers ``success`` with the picture links, or
``processing`` with a request id to fetch later from ``/api/v6/images/fetch``. The body follows
the documented example: numbers as strings (``"1024"``, ``"0.8"``), ``safety_checker`` as
``"yes"``/``"no"``, ``webhook`` as ``null``. See ``docs/provider.md``.

Answers are parsed tolerantly: an integer or string ``id``, ``output`` or (when that is empty)
``proxy_links``, ``nsfw_content_detected`` as one boolean, a list or absent, ``meta.seed`` as a
number, a string or a list, ``eta`` as a number or a numeric string.

Nothing in this module keeps the API key: ``raw`` is copied through :func:`redact`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from bot.jobs.training_api import freeze, id_text, redact

GenerationStatus = Literal["success", "processing"]

#: The provider's documented limits for one text2img request.
MAX_SAMPLES: Final = 4
MAX_IMAGE_SIDE: Final = 1024
MIN_LORA_STRENGTH: Final = 0.1
MAX_LORA_STRENGTH: Final = 1.0

#: A request id that may be put in a URL path (the provider's ids are integers).
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_TRUE_WORDS: Final = frozenset({"true", "yes", "1"})


def valid_request_id(value: str) -> bool:
    """Whether ``value`` is a usable generation request id (safe in a URL path)."""
    return bool(_REQUEST_ID.fullmatch(value))


def _text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def _whole(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {limit}, got {value}")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Everything ``POST /api/v6/images/text2img`` needs, apart from the API key.

    ``base_model_id`` is the base checkpoint (``model_id`` in the body; it must match the LoRA's
    base, SDXL or SD 1.5). ``lora_model`` is the trained LoRA's id. ``track_id`` comes back in
    the provider's answers and lets the bot recognise its own request. ``lora_strength`` is
    sent rounded to two decimals.
    """

    base_model_id: str
    prompt: str
    negative_prompt: str | None
    lora_model: str
    lora_strength: float
    width: int
    height: int
    samples: int
    safety_checker: bool
    seed: int
    track_id: str

    def __post_init__(self) -> None:
        for name in ("base_model_id", "prompt", "lora_model", "track_id"):
            _text(name, getattr(self, name))
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise ValueError("negative_prompt must be a string or None")
        strength: object = self.lora_strength
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
            raise ValueError("lora_strength must be a number")
        if not MIN_LORA_STRENGTH <= strength <= MAX_LORA_STRENGTH:
            raise ValueError(f"lora_strength must be between {MIN_LORA_STRENGTH} and {MAX_LORA_STRENGTH}")
        _whole("width", self.width, 1, MAX_IMAGE_SIDE)
        _whole("height", self.height, 1, MAX_IMAGE_SIDE)
        _whole("samples", self.samples, 1, MAX_SAMPLES)
        _whole("seed", self.seed, 0)
        if not isinstance(self.safety_checker, bool):
            raise ValueError("safety_checker must be a bool")

    def to_body(self, key: str) -> dict[str, object]:
        """The documented JSON body: key included, sizes and strength as strings, ``webhook`` null.

        A ``negative_prompt`` of ``None`` is left out (the provider then uses its own default).
        """
        body: dict[str, object] = {
            "key": key,
            "model_id": self.base_model_id,
            "prompt": self.prompt,
        }
        if self.negative_prompt is not None:
            body["negative_prompt"] = self.negative_prompt
        body.update(
            {
                "lora_model": self.lora_model,
                "lora_strength": str(round(float(self.lora_strength), 2)),
                "width": str(self.width),
                "height": str(self.height),
                "samples": str(self.samples),
                "safety_checker": "yes" if self.safety_checker else "no",
                "seed": self.seed,
                "webhook": None,
                "track_id": self.track_id,
            }
        )
        return body


@dataclass(frozen=True, slots=True)
class GenerationAnswer:
    """A ``text2img`` or ``fetch`` answer that is not an error.

    ``status`` is ``success`` (``image_urls`` holds at least one link) or ``processing`` (fetch
    ``request_id`` later; ``future_urls`` are where the pictures will appear, not pictures yet).
    ``request_id`` is the provider's ``id`` as a string. ``nsfw`` has one flag per image URL.
    ``seed`` comes from ``meta.seed`` and ``eta_seconds`` from ``eta``. The provider's
    ``fetch_result`` link is deliberately not kept: the client fetches from its own API root only.
    """

    status: GenerationStatus
    request_id: str | None
    image_urls: tuple[str, ...]
    nsfw: tuple[bool, ...]
    seed: int | None
    eta_seconds: float | None
    raw: Mapping[str, Any] = field(hash=False, repr=False)
    future_urls: tuple[str, ...] = ()

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], *, request_id: str | None = None) -> GenerationAnswer:
        """Parse a ``success`` or ``processing`` answer.

        ``request_id`` is used when the answer carries no usable ``id`` (a fetch knows it).
        Raises ``ValueError`` for another status, a success without picture links, or a
        processing answer without a request id to fetch.
        """
        body_status = payload.get("status")
        word = body_status.strip().lower() if isinstance(body_status, str) else ""
        if word not in ("success", "processing"):
            raise ValueError("the answer is neither a success nor processing")
        found = id_text(payload.get("id"))
        if found is None or not valid_request_id(found):
            found = request_id
        urls = _links(payload.get("output"))
        if word == "success" and not urls:
            urls = _links(payload.get("proxy_links"))
        if word == "success" and not urls:
            raise ValueError("the success answer carries no picture links")
        if word == "processing" and found is None:
            raise ValueError("the processing answer carries no request id")
        meta = payload.get("meta")
        return cls(
            status="success" if word == "success" else "processing",
            request_id=found,
            image_urls=urls,
            nsfw=_nsfw_flags(payload.get("nsfw_content_detected"), len(urls)),
            seed=_seed(meta.get("seed")) if isinstance(meta, Mapping) else None,
            eta_seconds=_number(payload.get("eta")),
            raw=freeze(redact(payload)),
            future_urls=_links(payload.get("future_links")),
        )


# --------------------------------------------------------------------------- parsing helpers


def _links(value: object) -> tuple[str, ...]:
    """The http(s) links in a list of strings (or one string); anything else is skipped."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list | tuple) else []
    links: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        text = item.strip()
        parts = urlsplit(text)
        if parts.scheme.lower() in ("http", "https") and parts.netloc and text not in links:
            links.append(text)
    return tuple(links)


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    return value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value != 0)


def _nsfw_flags(value: object, count: int) -> tuple[bool, ...]:
    """One flag per image: one value for all, a list (one per image), or absent (all false).

    When a list is shorter than the images, the images it does not cover are flagged if any
    image was: the safe side.
    """
    if isinstance(value, list | tuple):
        flags = [_flag(item) for item in value[:count]]
        return tuple(flags + [any(flags)] * (count - len(flags)))
    return (_flag(value),) * count


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _seed(value: object) -> int | None:
    """A seed from a number, a numeric string, or a list of them (the first)."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())  # exactly, even past a float's precision
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    number = _number(value)
    if number is None or number != int(number):
        return None
    return int(number)


__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_LORA_STRENGTH",
    "MAX_SAMPLES",
    "MIN_LORA_STRENGTH",
    "GenerationAnswer",
    "GenerationRequest",
    "GenerationStatus",
    "valid_request_id",
]
