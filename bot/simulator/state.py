"""The simulated provider's state: trainings, their status walk, webhook deliveries, crops, and
v6 image generations with their (expiring) pictures.

`Simulator` is the engine behind the HTTP app. Everything is kept in memory; nothing is
persisted. Time stamps in records are wall-clock seconds (`time.time()`); the walk itself, the
duplicate-request window (`Simulator.is_duplicate`) and the lifetime of generated pictures use the
event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import random
import secrets
import ssl
import string
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from bot.simulator.faults import FAILED, STATUSES, Faults, apply_fault_updates, check_step_seconds
from bot.simulator.validation import Text2ImgRequest

log = logging.getLogger("bot.simulator")

#: The `data` of the create answer (and of the status answer before any log line exists).
CREATE_ETA_TEXT: Final = "it will take upto 30 minutes."
#: The webhook `logs` of the first step, as in the docs' webhook example.
WEBHOOK_FIRST_LOGS: Final = "it will take upto 25 minutes"
#: Log lines appended to the status `data` when a step is entered. Joined with " /n " they give the
#: docs' model_ready example exactly (including its empty line).
STEP_LOG_LINES: Final[dict[str, tuple[str, ...]]] = {
    "training_started": ("Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",),
    "training_success": ("Step:2 Training Done, 4 Steps to go : ETA : 15 minutes",),
    "trained_model_uploading": ("Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes",),
    "trained_model_uploaded": ("", "Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes"),
    "model_ready": ("Model loaded successfully",),
}
#: The descriptions of the docs' status table, used as webhook `logs` where no log line exists.
STATUS_DESCRIPTIONS: Final[dict[str, str]] = {
    "deploying_gpu": "Deploying GPU",
    "training_started": "Training started",
    "training_success": "Training completed successfully",
    "trained_model_compressing": "Compressing the trained model",
    "trained_model_uploading": "Uploading the trained model",
    "trained_model_uploaded": "Trained model uploaded",
    "deploying_model": "Deploying the trained model",
    "model_ready": "The trained model is ready for use",
}
#: What a cancelled run reports (the provider documents no cancelled state; v6 says a stopped
#: run reads as completed).
CANCELLED_STATUS: Final = "training_success"
CANCELLED_LOG_LINE: Final = "Training stopped by user request"

_ID_ALPHABET: Final = string.ascii_letters + string.digits

#: The statuses of a v6 image generation (`ImageGeneration.status`).
GENERATION_PROCESSING: Final = "processing"
GENERATION_SUCCESS: Final = "success"
GENERATION_FAILED: Final = "failed"
#: The id of the first v6 image generation; ids then increase by one and are never reused
#: (not even after `Simulator.reset`).
FIRST_GENERATION_ID: Final = 100_001


@dataclass(frozen=True)
class SimulatorConfig:
    """Static settings of one simulator instance."""

    #: Only this key is valid; when None any non-empty key is accepted.
    api_key: str | None = None
    #: Seconds between two status steps (changeable at runtime: `Simulator.step_seconds`).
    step_seconds: float = 2.0
    #: Base of the links `base64_crop` returns; default: the origin the request came in on.
    public_url: str | None = None
    #: Per-image download timeout (seconds) and size cap (bytes) for `lora_fine_tune` images.
    image_timeout: float = 10.0
    max_image_bytes: int = 20 * 1024 * 1024
    #: Per-attempt webhook delivery timeout (seconds).
    webhook_timeout: float = 10.0
    #: Largest decoded image `base64_crop` accepts (the docs: 5 MB).
    max_crop_bytes: int = 5 * 1024 * 1024
    #: Side of the square `base64_crop` produces when cropping.
    crop_size: int = 512


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context shared by the simulator's HTTP clients (building one is slow)."""
    return ssl.create_default_context()


def key_owner(key: str) -> str:
    """An opaque owner tag for a key: trainings are scoped per key without storing the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ImageInfo:
    """One image the simulator downloaded for a training."""

    index: int
    url: str
    byte_size: int
    content_type: str | None
    format: str | None
    width: int
    height: int
    mode: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "url": self.url,
            "bytes": self.byte_size,
            "content_type": self.content_type,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class StatusEvent:
    status: str
    at: float
    #: `walk`, `advance`, `cancel`.
    source: str = "walk"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "at": self.at, "source": self.source}


@dataclass
class WebhookDelivery:
    """One webhook: either dropped (never sent) or one HTTP attempt."""

    training_id: str
    training_status: str
    body: dict[str, Any]
    #: 1-based copy number when `duplicate_webhooks` > 1.
    copy: int = 1
    #: 1-based attempt number (retries only with `webhook_retries`).
    attempt: int = 1
    dropped: bool = False
    queued_at: float = 0.0
    sent_at: float | None = None
    finished_at: float | None = None
    http_status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    def to_json(self) -> dict[str, Any]:
        return {
            "training_id": self.training_id,
            "training_status": self.training_status,
            "body": self.body,
            "copy": self.copy,
            "attempt": self.attempt,
            "dropped": self.dropped,
            "queued_at": self.queued_at,
            "sent_at": self.sent_at,
            "finished_at": self.finished_at,
            "http_status": self.http_status,
            "error": self.error,
        }


@dataclass
class RequestRecord:
    """One request to a provider endpoint (never its key)."""

    endpoint: str
    path: str
    at: float
    training_id: str | None = None
    http_status: int | None = None
    outcome: str | None = None
    #: The v6 image generation id the request named or created (`text2img`, `images_fetch`,
    #: `image_download`), as text.
    request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "path": self.path,
            "at": self.at,
            "training_id": self.training_id,
            "request_id": self.request_id,
            "http_status": self.http_status,
            "outcome": self.outcome,
        }


@dataclass
class Generation:
    """An image stored by `base64_crop`, served at `/generations/<name>.png`."""

    name: str
    data: bytes
    width: int
    height: int
    source_format: str | None
    cropped: bool
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bytes": len(self.data),
            "width": self.width,
            "height": self.height,
            "source_format": self.source_format,
            "cropped": self.cropped,
            "created_at": self.created_at,
        }


@dataclass
class ImageGeneration:
    """One v6 `text2img` generation and everything the simulator observed about it."""

    id: int
    owner: str
    created_at: float
    #: The request body without its key.
    request: dict[str, Any]
    model_id: str
    prompt: str
    negative_prompt: str | None
    #: `lora_model` as sent (None without one) and its ids.
    lora_model: str | None
    loras: tuple[str, ...]
    #: `meta.lora_strength`: a number, or the comma-separated values of several LoRAs.
    lora_strength: float | str
    width: int
    height: int
    samples: int
    #: The seed used (drawn at random when the request sent null).
    seed: int
    safety_checker: str
    #: Names of the pictures, served at `/generations/img/<name>.png` once finished.
    image_names: list[str]
    #: Per picture: flagged NSFW (fault `t2i_nsfw`).
    nsfw: list[bool]
    #: `processing` answers still to give before the generation finishes.
    processing_left: int
    #: `t2i_nsfw` when it was created: how `nsfw_content_detected` is shaped.
    nsfw_mode: str = "none"
    never_finishes: bool = False
    #: Set when the generation will fail (or failed) while processing.
    failure_message: str | None = None
    status: str = GENERATION_PROCESSING
    finished_at: float | None = None
    #: Seconds it took to draw the pictures (`generationTime`).
    generation_time: float | None = None
    fetch_count: int = 0
    #: The `text2img` answer was held (fault `t2i_hold`).
    answer_held: bool = False
    #: The pictures outlived `image_ttl_seconds` and were dropped.
    expired: bool = False
    # Runtime machinery, not part of the snapshot.
    images: dict[str, bytes] = field(default_factory=dict, repr=False)
    finished_monotonic: float | None = field(default=None, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def nsfw_content_detected(self) -> bool | list[bool]:
        if self.nsfw_mode == "first":
            return list(self.nsfw)
        return any(self.nsfw)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "status": self.status,
            "request": self.request,
            "model_id": self.model_id,
            "prompt": self.prompt,
            "lora_model": self.lora_model,
            "lora_strength": self.lora_strength,
            "width": self.width,
            "height": self.height,
            "samples": self.samples,
            "seed": self.seed,
            "safety_checker": self.safety_checker,
            "image_names": list(self.image_names),
            "images_stored": len(self.images),
            "nsfw": list(self.nsfw),
            "processing_left": self.processing_left,
            "never_finishes": self.never_finishes,
            "failure_message": self.failure_message,
            "finished_at": self.finished_at,
            "generation_time": self.generation_time,
            "fetch_count": self.fetch_count,
            "answer_held": self.answer_held,
            "expired": self.expired,
        }


@dataclass
class Training:
    """One LoRA training run and everything the simulator observed about it."""

    training_id: str
    owner: str
    created_at: float
    #: The request body without its key.
    request: dict[str, Any]
    #: Deviations from the documented request shapes (e.g. numbers not sent as strings).
    warnings: list[str]
    images: list[ImageInfo]
    webhook_url: str | None
    #: The planned status words, including injected and failure steps.
    walk: list[str]
    failure_reason: str | None = None
    stall_index: int | None = None
    submission_held: bool = False
    status: str = STATUSES[0]
    step_index: int = 0
    history: list[StatusEvent] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    cancelled: bool = False
    deleted: bool = False
    finished: bool = False
    # Runtime machinery, not part of the snapshot.
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    sender: asyncio.Task[None] | None = field(default=None, repr=False)
    outbox: asyncio.Queue[WebhookDelivery] = field(default_factory=asyncio.Queue, repr=False)
    held: list[tuple[str, dict[str, Any]]] = field(default_factory=list, repr=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    advance_requested: bool = field(default=False, repr=False)

    @property
    def stopped(self) -> bool:
        """No more steps will happen (finished, cancelled or deleted)."""
        return self.finished or self.cancelled or self.deleted

    def reached(self, status: str) -> bool:
        """The training has entered `status` at some point."""
        return any(event.status == status for event in self.history)

    @property
    def status_data(self) -> str:
        if self.status == FAILED and self.failure_reason is not None:
            return self.failure_reason
        if not self.log_lines:
            return CREATE_ETA_TEXT
        return "".join(f" /n {line}" for line in self.log_lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "training_id": self.training_id,
            "created_at": self.created_at,
            "status": self.status,
            "status_data": self.status_data,
            "step_index": self.step_index,
            "walk": list(self.walk),
            "failure_reason": self.failure_reason,
            "stall_index": self.stall_index,
            "submission_held": self.submission_held,
            "cancelled": self.cancelled,
            "deleted": self.deleted,
            "finished": self.finished,
            "request": self.request,
            "warnings": list(self.warnings),
            "images": [i.to_json() for i in self.images],
            "webhook_url": self.webhook_url,
            "history": [h.to_json() for h in self.history],
            "webhooks": [d.to_json() for d in self.deliveries],
        }


class Simulator:
    """State and fault switches of one simulated provider (reachable as `app[SIMULATOR_KEY]`)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = Faults()
        self.trainings: dict[str, Training] = {}
        self.generations: dict[str, Generation] = {}
        #: v6 `text2img` generations by id.
        self.generations_v6: dict[int, ImageGeneration] = {}
        self.requests: list[RequestRecord] = []
        #: Picture name -> the id of the generation it belongs to.
        self._image_names: dict[str, int] = {}
        self._next_generation_id = FIRST_GENERATION_ID
        self._expiry: asyncio.TimerHandle | None = None
        #: Fingerprints of recently accepted provider requests -> loop time (duplicate filter).
        self._recent_requests: dict[str, float] = {}
        self._step_seconds = config.step_seconds
        self._rng = random.Random(self.faults.drop_seed)
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self._image_http: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing.clear()
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.webhook_timeout),
                follow_redirects=False,
                headers={"User-Agent": "lorabot-provider-simulator"},
                trust_env=False,
                verify=tls_context(),
            )

    @property
    def image_http(self) -> httpx.AsyncClient:
        """The client training images are downloaded with (created on first use)."""
        if self._image_http is None:
            # Imported here: images.py imports this module for ImageInfo.
            from bot.simulator.images import image_client

            self._image_http = image_client(self.config.image_timeout)
        return self._image_http

    def begin_shutdown(self) -> None:
        """Release held answers (timeout_submission, hanging status calls) so shutdown is quick."""
        self._closing.set()

    async def close(self) -> None:
        self.begin_shutdown()
        self._cancel_expiry()
        await self._stop_all()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._image_http is not None:
            await self._image_http.aclose()
            self._image_http = None

    async def hold(self, seconds: float) -> None:
        """Sleep for `seconds`, or less if the simulator shuts down."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    # -- switches ----------------------------------------------------------------------------

    @property
    def step_seconds(self) -> float:
        return self._step_seconds

    @step_seconds.setter
    def step_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError("step_seconds must be >= 0")
        self._step_seconds = float(value)
        for training in self.trainings.values():
            training.wake.set()

    def set_faults(self, **updates: Any) -> None:
        """Set fault switches by name (checked; all or nothing). `step_seconds` is accepted too."""
        updates = dict(updates)
        step = updates.pop("step_seconds", None)
        if step is not None:
            step = check_step_seconds(step)
        apply_fault_updates(self.faults, updates)
        if "drop_webhooks" in updates or "drop_seed" in updates:
            self._rng = random.Random(self.faults.drop_seed)
        if step is not None:
            self.step_seconds = float(step)
        if "image_ttl_seconds" in updates:
            self.expire_images()

    async def reset(self) -> None:
        """Forget every training, crop, generation and request; restore default faults and step."""
        await self._stop_all()
        self._cancel_expiry()
        self.trainings.clear()
        self.generations.clear()
        self.generations_v6.clear()
        self._image_names.clear()
        self.requests.clear()
        self._recent_requests.clear()
        self.faults = Faults()
        self._rng = random.Random(self.faults.drop_seed)
        self._step_seconds = self.config.step_seconds
        self._notify()

    def is_duplicate(self, fingerprint: str) -> bool:
        """The duplicate-request filter (`duplicate_window_seconds`): True to refuse this request.

        A request is a duplicate when the same fingerprint was accepted less than the window ago
        (loop time). Accepted requests start a new window; refused ones do not extend it.
        """
        window = self.faults.duplicate_window_seconds
        if window <= 0:
            return False
        now = asyncio.get_running_loop().time()
        self._recent_requests = {k: at for k, at in self._recent_requests.items() if now - at < window}
        if fingerprint in self._recent_requests:
            return True
        self._recent_requests[fingerprint] = now
        return False

    def take(self, counter: str) -> bool:
        """Use one unit of a "next N" fault counter; True if one was left."""
        left = getattr(self.faults, counter)
        if left > 0:
            setattr(self.faults, counter, left - 1)
            return True
        return False

    # -- trainings ---------------------------------------------------------------------------

    def new_training_id(self) -> str:
        while True:
            candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
            if candidate not in self.trainings:
                return candidate

    def create_training(
        self,
        *,
        owner: str,
        request: dict[str, Any],
        warnings: list[str],
        images: list[ImageInfo],
        webhook_url: str | None,
    ) -> Training:
        """Register a training and plan its walk (the walk starts with `start_walk`)."""
        faults = self.faults
        walk = list(STATUSES)
        if faults.unknown_status_word:
            walk.insert(walk.index(faults.unknown_status_after) + 1, faults.unknown_status_word)
        failure_reason: str | None = None
        if self.take("fail_training"):
            walk = [*walk[: walk.index(faults.fail_training_at)], FAILED]
            failure_reason = faults.fail_training_reason
        stall_index: int | None = None
        if self.take("stall_training") and faults.stall_at in walk:
            stall_index = walk.index(faults.stall_at)
        training = Training(
            training_id=self.new_training_id(),
            owner=owner,
            created_at=time.time(),
            request=request,
            warnings=warnings,
            images=images,
            webhook_url=webhook_url,
            walk=walk,
            failure_reason=failure_reason,
            stall_index=stall_index,
            status=walk[0],
        )
        self.trainings[training.training_id] = training
        log.info(
            "training %s created: %d image(s), webhook %s, %d step(s)%s",
            training.training_id,
            len(images),
            "set" if webhook_url else "none",
            len(walk),
            " (will fail)" if failure_reason else "",
        )
        self._notify()
        return training

    def start_walk(self, training: Training) -> None:
        if training.task is None and not training.stopped:
            training.task = asyncio.get_running_loop().create_task(
                self._walk(training), name=f"sim-walk-{training.training_id}"
            )

    def find(self, training_id: str, owner: str) -> Training | None:
        training = self.trainings.get(training_id)
        if training is None or training.deleted or training.owner != owner:
            return None
        return training

    def list_ids(self, owner: str) -> list[str]:
        return [t.training_id for t in self.list_trainings(owner)]

    def list_trainings(self, owner: str) -> list[Training]:
        """The key's trainings that were not deleted, oldest first."""
        return [t for t in self.trainings.values() if not t.deleted and t.owner == owner]

    def advance(self, training_id: str) -> bool:
        """Move a running training to its next step now (also un-stalls it)."""
        training = self.trainings.get(training_id)
        if training is None or training.stopped:
            return False
        training.advance_requested = True
        training.wake.set()
        return True

    async def cancel(self, training: Training) -> None:
        """Stop the walk; the run then reads `training_success` and sends no more webhooks."""
        training.cancelled = True
        await self._stop(training)
        training.status = CANCELLED_STATUS
        training.log_lines.append(CANCELLED_LOG_LINE)
        training.history.append(StatusEvent(CANCELLED_STATUS, time.time(), "cancel"))
        log.info("training %s cancelled", training.training_id)
        self._notify()

    async def delete(self, training: Training) -> None:
        training.deleted = True
        await self._stop(training)
        log.info("training %s deleted", training.training_id)
        self._notify()

    async def _stop(self, training: Training) -> None:
        tasks = [t for t in (training.task, training.sender) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        training.held.clear()
        while not training.outbox.empty():
            training.outbox.get_nowait()

    async def _stop_all(self) -> None:
        for training in list(self.trainings.values()):
            await self._stop(training)

    # -- v6 image generations ----------------------------------------------------------------

    def create_generation(self, *, owner: str, request: Text2ImgRequest) -> ImageGeneration:
        """Register a generation (the `t2i_*` switches for new generations are taken here)."""
        faults = self.faults
        generation_id = self._next_generation_id
        self._next_generation_id += 1
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        strengths = request.lora_strengths
        strength: float | str
        if len(strengths) == 1:
            strength = int(strengths[0]) if strengths[0].is_integer() else strengths[0]
        else:
            strength = ",".join(f"{value:g}" for value in strengths)
        mode = faults.t2i_nsfw
        nsfw = [mode == "all" or (mode == "first" and index == 0) for index in range(request.samples)]
        generation = ImageGeneration(
            id=generation_id,
            owner=owner,
            created_at=time.time(),
            request=request.echo,
            model_id=request.model_id,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            lora_model=request.lora_model,
            loras=request.loras,
            lora_strength=strength,
            width=request.width,
            height=request.height,
            samples=request.samples,
            seed=seed,
            safety_checker=request.safety_checker,
            image_names=[secrets.token_hex(12) for _ in range(request.samples)],
            nsfw=nsfw,
            nsfw_mode=mode,
            processing_left=faults.t2i_processing_steps,
            never_finishes=self.take("t2i_never_finishes"),
        )
        if self.take("t2i_fail_processing"):
            generation.failure_message = faults.t2i_fail_processing_message
        self.generations_v6[generation_id] = generation
        for name in generation.image_names:
            self._image_names[name] = generation_id
        log.info(
            "generation %d created: %d picture(s) %dx%d, lora %s, %d processing answer(s)%s",
            generation_id,
            request.samples,
            request.width,
            request.height,
            request.lora_model or "none",
            generation.processing_left,
            " (never finishes)" if generation.never_finishes else " (will fail)" if generation.failure_message else "",
        )
        self._notify()
        return generation

    def find_generation(self, generation_id: int, owner: str) -> ImageGeneration | None:
        generation = self.generations_v6.get(generation_id)
        if generation is None or generation.owner != owner:
            return None
        return generation

    async def answer_generation(self, generation: ImageGeneration) -> None:
        """One answer about `generation` is due (`text2img`, then each fetch): move it on.

        While `processing_left` > 0 the answer is `processing` (one is used up); then the
        generation finishes: it fails (`t2i_fail_processing`) or its pictures are drawn (in a
        thread) and it succeeds. A finished generation does not change any more, and one that
        never finishes stays `processing`.
        """
        async with generation.lock:
            if generation.status != GENERATION_PROCESSING or generation.never_finishes:
                return
            if generation.processing_left > 0:
                generation.processing_left -= 1
                return
            if generation.failure_message is not None:
                generation.status = GENERATION_FAILED
                generation.finished_at = time.time()
                log.info("generation %d failed (fault)", generation.id)
                self._notify()
                return
            # Imported here: images.py imports this module for ImageInfo.
            from bot.simulator.images import render_pngs

            started = time.monotonic()
            pictures = await asyncio.to_thread(
                render_pngs, generation.width, generation.height, generation.seed, generation.samples
            )
            generation.generation_time = round(time.monotonic() - started, 3)
            generation.images = dict(zip(generation.image_names, pictures, strict=True))
            generation.status = GENERATION_SUCCESS
            generation.finished_at = time.time()
            generation.finished_monotonic = time.monotonic()
            log.info("generation %d finished: %d picture(s)", generation.id, len(pictures))
            self._notify()
        self.expire_images()

    def picture(self, name: str) -> tuple[ImageGeneration, bytes | None] | None:
        """The generation a picture name belongs to and its PNG (None once expired or not drawn yet)."""
        generation_id = self._image_names.get(name)
        generation = None if generation_id is None else self.generations_v6.get(generation_id)
        if generation is None:
            return None
        self.expire_images()
        return generation, generation.images.get(name)

    def expire_images(self) -> None:
        """Drop the pictures older than `image_ttl_seconds`; schedule the next drop."""
        ttl = self.faults.image_ttl_seconds
        now = time.monotonic()
        next_due: float | None = None
        for generation in self.generations_v6.values():
            if not generation.images or generation.finished_monotonic is None:
                continue
            due = generation.finished_monotonic + ttl
            if due <= now:
                generation.images.clear()
                generation.expired = True
                log.info("generation %d: pictures expired", generation.id)
                self._notify()
            elif next_due is None or due < next_due:
                next_due = due
        self._cancel_expiry()
        if next_due is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (set_faults outside one): the next access sweeps
            self._expiry = loop.call_later(max(0.0, next_due - now) + 0.001, self.expire_images)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # -- the walk ----------------------------------------------------------------------------

    async def _walk(self, training: Training) -> None:
        loop = asyncio.get_running_loop()
        index = 0
        source = "walk"
        while True:
            self._enter(training, index, source)
            if training.finished:
                return
            stalled = training.stall_index == index
            started = loop.time()
            source = "walk"
            while True:
                training.wake.clear()
                if training.advance_requested:
                    training.advance_requested = False
                    source = "advance"
                    break
                remaining = None if stalled else started + self._step_seconds - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(training.wake.wait(), timeout=remaining)
            index += 1

    def _enter(self, training: Training, index: int, source: str) -> None:
        status = training.walk[index]
        training.step_index = index
        training.status = status
        training.history.append(StatusEvent(status, time.time(), source))
        training.log_lines.extend(STEP_LOG_LINES.get(status, ()))
        terminal = status == FAILED or index == len(training.walk) - 1
        if status == FAILED:
            body: dict[str, Any] = {
                "status": "failed",
                "training_status": FAILED,
                "logs": training.failure_reason or "",
                "model_id": training.training_id,
            }
        else:
            body = {
                "status": "success",
                "training_status": status,
                "logs": self._webhook_logs(status),
                "model_id": training.training_id,
            }
        if terminal:
            training.finished = True
        log.info("training %s -> %s", training.training_id, status)
        self._emit(training, status, body, terminal=terminal, send=status != FAILED or self.faults.failure_webhook)
        self._notify()

    @staticmethod
    def _webhook_logs(status: str) -> str:
        if status == STATUSES[0]:
            return WEBHOOK_FIRST_LOGS
        lines = [line for line in STEP_LOG_LINES.get(status, ()) if line]
        if lines:
            return lines[-1]
        return STATUS_DESCRIPTIONS.get(status, status.replace("_", " ").capitalize())

    # -- webhooks ----------------------------------------------------------------------------

    def _emit(
        self, training: Training, status: str, body: dict[str, Any], *, terminal: bool, send: bool = True
    ) -> None:
        """Apply `reorder_webhooks`, then hand the webhooks due now to `_dispatch`.

        With `send` False (a failure step under `failure_webhook=False`) this step's webhook is
        recorded as dropped and never sent, while held earlier steps still go out.
        """
        if not training.webhook_url:
            return
        mode = self.faults.reorder_webhooks
        item = (status, body)
        due: list[tuple[str, dict[str, Any]]]
        if mode == "swap_pairs":
            if training.held:
                due = [item, *reversed(training.held)]
                training.held.clear()
            elif terminal:
                due = [item]
            else:
                training.held.append(item)
                due = []
        elif mode == "reverse":
            training.held.append(item)
            due = []
            if terminal:
                due = list(reversed(training.held))
                training.held.clear()
        else:
            due = [*training.held, item]
            training.held.clear()
        for word, payload in due:
            if not send and payload is body:
                training.deliveries.append(
                    WebhookDelivery(training.training_id, word, payload, dropped=True, queued_at=time.time())
                )
                log.info("training %s: no webhook for %s (failure_webhook off)", training.training_id, word)
                continue
            self._dispatch(training, word, payload)

    def _should_drop(self, status: str) -> bool:
        drop = self.faults.drop_webhooks
        if isinstance(drop, bool):
            return drop
        if isinstance(drop, Set):
            return status in drop
        return self._rng.random() < drop

    def _dispatch(self, training: Training, status: str, body: dict[str, Any]) -> None:
        now = time.time()
        if self._should_drop(status):
            training.deliveries.append(WebhookDelivery(training.training_id, status, body, dropped=True, queued_at=now))
            log.info("training %s: webhook %s dropped (fault)", training.training_id, status)
            return
        for copy in range(1, max(1, self.faults.duplicate_webhooks) + 1):
            training.outbox.put_nowait(WebhookDelivery(training.training_id, status, body, copy=copy, queued_at=now))
        if training.sender is None or training.sender.done():
            training.sender = asyncio.get_running_loop().create_task(
                self._send_loop(training), name=f"sim-webhooks-{training.training_id}"
            )

    async def _send_loop(self, training: Training) -> None:
        while not training.outbox.empty():
            delivery = training.outbox.get_nowait()
            retries = self.faults.webhook_retries
            attempt = 1
            while True:
                delivery.attempt = attempt
                training.deliveries.append(delivery)
                await self._send(training, delivery)
                if delivery.delivered or attempt > retries:
                    break
                await asyncio.sleep(self.faults.webhook_retry_delay)
                attempt += 1
                delivery = WebhookDelivery(
                    training.training_id,
                    delivery.training_status,
                    delivery.body,
                    copy=delivery.copy,
                    queued_at=delivery.queued_at,
                )

    async def _send(self, training: Training, delivery: WebhookDelivery) -> None:
        assert training.webhook_url is not None
        if self._http is None:
            await self.start()
        assert self._http is not None
        delivery.sent_at = time.time()
        try:
            response = await self._http.post(
                training.webhook_url,
                content=json.dumps(delivery.body).encode(),
                headers={"Content-Type": "application/json"},
            )
            delivery.http_status = response.status_code
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except asyncio.CancelledError:
            delivery.error = "cancelled"
            raise
        finally:
            delivery.finished_at = time.time()
            self._notify()
        log.info(
            "training %s: webhook %s (copy %d, attempt %d) -> %s",
            training.training_id,
            delivery.training_status,
            delivery.copy,
            delivery.attempt,
            delivery.http_status if delivery.http_status is not None else delivery.error,
        )

    # -- observation helpers (for tests) -----------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until `predicate()` is true; raises TimeoutError after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("simulator condition not reached in time")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 0.25))

    async def wait_for_status(self, training_id: str, status: str, within: float = 10.0) -> Training:
        def reached() -> bool:
            t = self.trainings.get(training_id)
            return t is not None and any(h.status == status for h in t.history)

        await self.wait_for(reached, within)
        return self.trainings[training_id]

    async def wait_for_generation(
        self, generation_id: int, status: str = GENERATION_SUCCESS, within: float = 10.0
    ) -> ImageGeneration:
        """Wait until a v6 generation has `status` (`processing`, `success` or `failed`)."""

        def reached() -> bool:
            g = self.generations_v6.get(generation_id)
            return g is not None and g.status == status

        await self.wait_for(reached, within)
        return self.generations_v6[generation_id]

    async def wait_for_webhooks(self, training_id: str, count: int, within: float = 10.0) -> Training:
        """Wait until `count` webhook HTTP attempts of a training have completed."""

        def done() -> bool:
            t = self.trainings.get(training_id)
            return t is not None and sum(d.finished_at is not None for d in t.deliveries) >= count

        await self.wait_for(done, within)
        return self.trainings[training_id]

    async def wait_until_settled(self, training_id: str, within: float = 10.0) -> Training:
        """Wait until a training has stopped and its webhook queue is empty."""

        def settled() -> bool:
            t = self.trainings.get(training_id)
            return (
                t is not None
                and t.stopped
                and (t.sender is None or t.sender.done())
                and all(d.dropped or d.finished_at is not None for d in t.deliveries)
            )

        await self.wait_for(settled, within)
        return self.trainings[training_id]

    def snapshot(self) -> dict[str, Any]:
        """Everything observable, JSON-ready (the answer of `GET /_sim/state`)."""
        self.expire_images()
        return {
            "step_seconds": self._step_seconds,
            "faults": self.faults.to_json(),
            "trainings": [t.to_json() for t in self.trainings.values()],
            "generations": [g.to_json() for g in self.generations.values()],
            "generations_v6": [g.to_json() for g in self.generations_v6.values()],
            "requests": [r.to_json() for r in self.requests],
        }
