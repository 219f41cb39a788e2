"""Request validation for `lora_fine_tune`, `base64_crop` and v6 `text2img`, with Laravel-style messages.

The provider is a Laravel (PHP) application; its documented validation error is
`{"status":"error","message":{"prompt":["The prompt field is required."]}}`. The simulator answers
training validation errors in that shape under the v3 training key `messege`, or (fault switch
`validation_error_shape="string"`) as one message, see `summarize_errors`.

The women training type has three spellings across the provider's pages (`female`, `women`,
`femal`); all are accepted unless `woman_spelling` picks one, as a provider enforcing a single
enum would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

TRAINING_TYPES: Final[frozenset[str]] = frozenset({"men", "female", "women", "femal", "couple", "null"})
#: The spellings of the women training type seen in the provider's documentation.
WOMAN_SPELLINGS: Final[frozenset[str]] = frozenset({"female", "women", "femal"})
INVALID_TRAINING_TYPE: Final = "The selected training type is invalid."
BASE_MODEL_TYPES: Final[tuple[str, ...]] = ("normal", "sdxl")
LORA_TYPES: Final[tuple[str, ...]] = ("lora", "lycoris")
MAX_TRAIN_STEPS_RANGE: Final = (1, 2000)
_INTEGER: Final = re.compile(r"[+-]?\d+")
_NUMBER: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

Errors = dict[str, list[str]]


def _label(field: str) -> str:
    return field.replace("_", " ")


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c.isspace() for c in value)


@dataclass(frozen=True)
class LoraRequest:
    """A validated `lora_fine_tune` body."""

    instance_prompt: str
    class_prompt: str
    images: tuple[str, ...]
    training_type: str | None
    base_model_type: str
    lora_type: str
    max_train_steps: int
    seed: int | None
    webhook: str | None
    negative_prompt: str | None
    #: The body as received, without `key`.
    echo: dict[str, Any]
    #: Deviations from the documented shapes that the simulator tolerated.
    warnings: tuple[str, ...]


def _optional_url(body: dict[str, Any], field: str, errors: Errors) -> str | None:
    """An optional http(s) URL field (null and "" mean none)."""
    raw = body.get(field)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not is_http_url(raw):
        _add(errors, field, f"The {_label(field)} must be a valid URL.")
        return None
    return raw


def _add(errors: Errors, field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def _required_string(body: dict[str, Any], field: str, errors: Errors) -> str:
    value = body.get(field)
    if value is None or value == "":
        _add(errors, field, f"The {_label(field)} field is required.")
        return ""
    if not isinstance(value, str):
        _add(errors, field, f"The {_label(field)} must be a string.")
        return ""
    if not value.strip():
        _add(errors, field, f"The {_label(field)} field is required.")
    return value


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...], default: str, errors: Errors) -> str:
    value = body.get(field)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in choices:
        _add(errors, field, f"The selected {_label(field)} is invalid.")
        return default
    return value


def summarize_errors(errors: Errors) -> str:
    """One message for a set of errors, as Laravel words it: the first, plus "(and N more errors)"."""
    messages = [message for field_messages in errors.values() for message in field_messages]
    if not messages:
        return "The given data was invalid."
    first, more = messages[0], len(messages) - 1
    if more:
        return f"{first} (and {more} more error{'s' if more > 1 else ''})"
    return first


def validate_lora_request(body: dict[str, Any], *, woman_spelling: str = "both") -> LoraRequest | Errors:
    """Check a `lora_fine_tune` body as the reference describes; return the errors or the request.

    `woman_spelling` other than "both" (`female` or `women`) refuses the other women spellings.
    """
    errors: Errors = {}
    warnings: list[str] = []

    instance_prompt = _required_string(body, "instance_prompt", errors)
    class_prompt = _required_string(body, "class_prompt", errors)

    images: list[str] = []
    raw_images = body.get("images")
    if raw_images is None or raw_images == [] or raw_images == "":
        _add(errors, "images", "The images field is required.")
    elif not isinstance(raw_images, list):
        _add(errors, "images", "The images must be an array.")
    else:
        for i, url in enumerate(raw_images):
            if not isinstance(url, str) or not is_http_url(url):
                _add(errors, f"images.{i}", f"The images.{i} must be a valid URL.")
            else:
                images.append(url)

    training_type: str | None = None
    if "training_type" not in body:
        _add(errors, "training_type", "The training type field is required.")
    else:
        raw_type = body["training_type"]
        if raw_type is None:
            training_type = None
        elif isinstance(raw_type, str) and raw_type in WOMAN_SPELLINGS and woman_spelling not in ("both", raw_type):
            _add(errors, "training_type", INVALID_TRAINING_TYPE)
        elif isinstance(raw_type, str) and raw_type in TRAINING_TYPES:
            training_type = None if raw_type == "null" else raw_type
            if raw_type in ("femal", "women"):
                warnings.append(f"training_type {raw_type!r} is not in the SDA table (men/female/couple/null)")
        else:
            _add(errors, "training_type", INVALID_TRAINING_TYPE)

    base_model_type = _choice(body, "base_model_type", BASE_MODEL_TYPES, "sdxl", errors)
    lora_type = _choice(body, "lora_type", LORA_TYPES, "lora", errors)

    max_train_steps = 0
    low, high = MAX_TRAIN_STEPS_RANGE
    raw_steps = body.get("max_train_steps")
    if raw_steps is None or raw_steps == "":
        _add(errors, "max_train_steps", "The max train steps field is required.")
    elif isinstance(raw_steps, bool) or not isinstance(raw_steps, (str, int, float)):
        _add(errors, "max_train_steps", "The max train steps must be a number.")
    else:
        if not isinstance(raw_steps, str):
            warnings.append(f"max_train_steps was sent as {type(raw_steps).__name__}, the docs send a string")
        text = str(raw_steps).strip()
        if isinstance(raw_steps, float) and raw_steps.is_integer():
            text = str(int(raw_steps))
        if not _NUMBER.fullmatch(text):
            _add(errors, "max_train_steps", "The max train steps must be a number.")
        elif not _INTEGER.fullmatch(text):
            _add(errors, "max_train_steps", "The max train steps must be an integer.")
        else:
            max_train_steps = int(text)
            if not low <= max_train_steps <= high:
                _add(errors, "max_train_steps", f"The max train steps must be between {low} and {high}.")

    seed: int | None = None
    raw_seed = body.get("seed")
    if raw_seed is not None and raw_seed != "":
        if isinstance(raw_seed, bool) or not isinstance(raw_seed, (str, int)):
            _add(errors, "seed", "The seed must be a number.")
        else:
            if not isinstance(raw_seed, str):
                warnings.append(f"seed was sent as {type(raw_seed).__name__}, the docs send a string")
            if _INTEGER.fullmatch(str(raw_seed).strip()):
                seed = int(str(raw_seed).strip())
            else:
                _add(errors, "seed", "The seed must be an integer.")

    webhook = _optional_url(body, "webhook", errors)

    negative_prompt: str | None = None
    raw_negative = body.get("negative_prompt")
    if raw_negative is not None:
        if not isinstance(raw_negative, str):
            _add(errors, "negative_prompt", "The negative prompt must be a string.")
        else:
            negative_prompt = raw_negative

    if errors:
        return errors
    return LoraRequest(
        instance_prompt=instance_prompt,
        class_prompt=class_prompt,
        images=tuple(images),
        training_type=training_type,
        base_model_type=base_model_type,
        lora_type=lora_type,
        max_train_steps=max_train_steps,
        seed=seed,
        webhook=webhook,
        negative_prompt=negative_prompt,
        echo={k: v for k, v in body.items() if k != "key"},
        warnings=tuple(warnings),
    )


# -- v6 text2img ----------------------------------------------------------------------------------

#: Largest `width`/`height` and `samples` the v6 text2img docs allow.
MAX_T2I_SIDE: Final = 1024
MAX_T2I_SAMPLES: Final = 4
LORA_STRENGTH_RANGE: Final = (0.1, 1.0)
SAFETY_CHECKER_VALUES: Final[tuple[str, ...]] = ("yes", "no")


@dataclass(frozen=True)
class Text2ImgRequest:
    """A validated v6 `images/text2img` body."""

    model_id: str
    prompt: str
    negative_prompt: str | None
    #: The `lora_model` ids (a comma-separated list in the body), empty without one.
    loras: tuple[str, ...]
    #: `lora_model` as sent (None when absent or empty).
    lora_model: str | None
    #: One strength per value sent (one value may cover several LoRAs); default 1.
    lora_strengths: tuple[float, ...]
    width: int
    height: int
    samples: int
    safety_checker: str
    #: None = random (the simulator picks one and reports it in `meta.seed`).
    seed: int | None
    webhook: str | None
    track_id: Any
    #: The body as received, without `key`.
    echo: dict[str, Any]


def _whole_number(body: dict[str, Any], field: str, default: int, low: int, high: int, errors: Errors) -> int:
    """An integer sent as a JSON number or a numeric string (the docs send `"512"`)."""
    raw = body.get(field)
    if raw is None or raw == "":
        return default
    label = _label(field)
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        _add(errors, field, f"The {label} must be a number.")
        return default
    text = str(int(raw)) if isinstance(raw, float) and raw.is_integer() else str(raw).strip()
    if not _NUMBER.fullmatch(text):
        _add(errors, field, f"The {label} must be a number.")
        return default
    if not _INTEGER.fullmatch(text):
        _add(errors, field, f"The {label} must be an integer.")
        return default
    value = int(text)
    if value < low:
        _add(errors, field, f"The {label} must be at least {low}.")
    elif value > high:
        _add(errors, field, f"The {label} must not be greater than {high}.")
    return value


def _lora_strengths(raw: Any, errors: Errors) -> tuple[float, ...]:
    """`lora_strength`: a number or a string of one or more comma-separated numbers, each 0.1-1."""
    if raw is None or raw == "":
        return (1.0,)
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        _add(errors, "lora_strength", "The lora strength must be a number.")
        return (1.0,)
    parts = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else [str(raw)]
    values: list[float] = []
    for part in parts:
        if not _NUMBER.fullmatch(part):
            _add(errors, "lora_strength", "The lora strength must be a number.")
            return (1.0,)
        values.append(float(part))
    low, high = LORA_STRENGTH_RANGE
    if any(not low <= v <= high for v in values):
        _add(errors, "lora_strength", f"The lora strength must be between {low:g} and {high:g}.")
    return tuple(values)


def validate_text2img_request(body: dict[str, Any]) -> Text2ImgRequest | Errors:
    """Check a v6 `images/text2img` body as the docs describe; return the errors or the request.

    Numbers may come as strings (the docs) or as JSON numbers (the SDKs). Fields the simulator
    does not act on (`num_inference_steps`, `guidance_scale`, `scheduler`, ...) are only echoed.
    """
    errors: Errors = {}
    model_id = _required_string(body, "model_id", errors)
    prompt = _required_string(body, "prompt", errors)

    negative_prompt: str | None = None
    raw_negative = body.get("negative_prompt")
    if raw_negative is not None:
        if not isinstance(raw_negative, str):
            _add(errors, "negative_prompt", "The negative prompt must be a string.")
        else:
            negative_prompt = raw_negative

    loras: tuple[str, ...] = ()
    lora_model: str | None = None
    raw_lora = body.get("lora_model")
    if raw_lora is not None and raw_lora != "":
        if not isinstance(raw_lora, str):
            _add(errors, "lora_model", "The lora model must be a string.")
        else:
            loras = tuple(name.strip() for name in raw_lora.split(",") if name.strip())
            if not loras:
                _add(errors, "lora_model", "The lora model must be a string.")
            lora_model = raw_lora
    strengths = _lora_strengths(body.get("lora_strength"), errors)
    if loras and len(strengths) not in (1, len(loras)):
        _add(errors, "lora_strength", "The lora strength must have one value, or one per lora model.")

    width = _whole_number(body, "width", 512, 1, MAX_T2I_SIDE, errors)
    height = _whole_number(body, "height", 512, 1, MAX_T2I_SIDE, errors)
    samples = _whole_number(body, "samples", 1, 1, MAX_T2I_SAMPLES, errors)
    safety_checker = _choice(body, "safety_checker", SAFETY_CHECKER_VALUES, "yes", errors)

    seed: int | None = None
    raw_seed = body.get("seed")
    if raw_seed is not None and raw_seed != "":
        if isinstance(raw_seed, bool) or not isinstance(raw_seed, (str, int)):
            _add(errors, "seed", "The seed must be an integer.")
        elif _INTEGER.fullmatch(str(raw_seed).strip()):
            seed = int(str(raw_seed).strip())
        else:
            _add(errors, "seed", "The seed must be an integer.")

    webhook = _optional_url(body, "webhook", errors)

    if errors:
        return errors
    return Text2ImgRequest(
        model_id=model_id,
        prompt=prompt,
        negative_prompt=negative_prompt,
        loras=loras,
        lora_model=lora_model,
        lora_strengths=strengths,
        width=width,
        height=height,
        samples=samples,
        safety_checker=safety_checker,
        seed=seed,
        webhook=webhook,
        track_id=body.get("track_id"),
        echo={k: v for k, v in body.items() if k != "key"},
    )
