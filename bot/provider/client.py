"""Async client for the Stable Diffusion API (ModelsLab): v3 LoRA training and v6 generation.

Every call is ``POST {api_root}/<endpoint>`` (training, ``…/api/v3``) or
``POST {origin}/api/v6/images/<endpoint>`` (generating pictures with a trained LoRA) with a JSON
body that carries the API key as ``"key"``. ``{origin}`` is the API root without its ``/api/v3``
(or ``/api/sandbox/v3``). Every endpoint, its quirks and the bot's answer to each are described
in ``docs/provider.md``.

Retry policy:

* ``submit_training`` is never retried: a second submission may start (and bill) a second
  training. Failures that happen before the request could reach the provider (connect errors,
  pool timeouts, a redirect, a 4xx) and explicit errors from the provider itself (a 500/503 with
  a JSON error body) raise the matching error; anything else without a usable answer (timeouts
  or dropped connections after sending, 502/504 from a gateway, an empty or non-JSON body, a
  success without a training id) raises :class:`SubmissionUncertain`. A rate limit is raised as
  :class:`RateLimited` only when the provider certainly did not take the request (its queue is
  full); the duplicate-request filter, or a rate limit that does not say which, means an
  identical request may already be in, so it raises :class:`SubmissionUncertain`.
  ``text2img`` (it may start, and bill, a generation) follows the same rules.
* The other calls are safe to repeat (cancelling twice is harmless) and are retried on 5xx,
  timeouts, network errors and non-JSON bodies, with exponential backoff and full jitter, up to
  ``max_attempts`` attempts in all. A 429 waits the provider's ``retry_after`` (from the body, the
  ``Retry-After`` header or the spam-filter tip) within the same attempt budget, unless that wait
  is longer than ``max_rate_limit_wait``, in which case :class:`RateLimited` is raised at once.
* ``training_status`` tells a failed *call* (raised) from a failed *training* (returned, with
  ``status == "failed"`` and the provider's reason): a failure body at HTTP 2xx is the training's
  failure unless it is a call-level error (key, rate limit, credits, not found, a validation
  object, or a generic server error).
* ``fetch_generation`` is retried like the other read-only calls, but its answers are never
  reused. A failure body at HTTP 2xx that is not about the call, or "not found" (the provider
  lost the request), raises :class:`GenerationFailed`. The ``fetch_result`` link of an answer is
  never followed: the key goes to the configured provider only.
* ``download_image`` GETs an output link with a separate HTTP client that carries neither the
  key nor the provider's headers, and retries a 5xx or a network failure twice.

Redirects: a 307/308 keeps the method and body, so it is followed, but only to the configured
host or the provider's own domains over https (the key travels in the body); the new address is
used from then on (a v3 move applies to v6 too, a v6 move to v6 only). Any other redirect of a
POST raises :class:`ProviderMisconfigured`.

The key is kept out of ``repr``, logs, exceptions and stored payloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from bot.jobs.image_api import GenerationAnswer, GenerationRequest, valid_request_id
from bot.jobs.provider_errors import (
    GenerationFailed,
    ImageDownloadFailed,
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    RateLimited,
    RateLimitKind,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.jobs.training_api import (
    DUPLICATE_WINDOW_SECONDS,
    FAILURE_BODY_STATUSES,
    SubmitResult,
    TrainingRequest,
    TrainingStatus,
    extract_training_id,
    id_text,
    mask,
    message_text,
    redact,
    tip_text,
)
from bot.metrics import Metrics

logger = logging.getLogger(__name__)

_Operation = Literal["submit", "status", "cancel", "list", "delete", "crop", "generate", "fetch"]
#: Which API family an endpoint belongs to: v3 (training, under the API root) or v6 (images).
_Api = Literal["v3", "v6"]
#: The two spellings of the v6 fetch: ``images/fetch`` with ``request_id`` in the body (the
#: provider's documentation), ``images/fetch/{id}`` (its SDK). The other one is tried on 404/405.
_FetchForm = Literal["body", "path"]
#: Operations whose path names a training: a 404 or "not found" there means TrainingNotFound.
_TRAINING_OPERATIONS: Final = frozenset({"status", "cancel", "delete"})

#: Endpoint names for metrics, without the ids some paths carry (``fine_tune_status/{id}``).
_ENDPOINT_NAMES: Final = (
    "lora_fine_tune",
    "fine_tune_status",
    "cancle_training",
    "cancel_training",
    "finetune_list",
    "finetune/delete",
    "base64_crop",
    "images/text2img",
    "images/fetch",
)

#: The provider's documented spelling first; the corrected spelling is the fallback on HTTP 404.
_CANCEL_ENDPOINTS: Final = ("cancle_training", "cancel_training")

#: ``base64_crop`` accepts at most 5 MB (SDA miscs page, ModelsLab general API).
#: ``download_image`` refuses pictures larger than this by default.
MAX_DOWNLOAD_BYTES: Final = 20 * 1024 * 1024
#: ``download_image`` tries a link this many times in all when it fails transiently.
_DOWNLOAD_ATTEMPTS: Final = 3
_DOWNLOAD_MAX_REDIRECTS: Final = 3
#: An output link answering one of these is gone (output links are temporary).
_EXPIRED_LINK: Final = frozenset({403, 404, 410})
#: Image types that may arrive as ``application/octet-stream``: recognised by their first bytes.
_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_UNTYPED: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_GENERATION_UNCERTAIN: Final = (
    "The image service did not confirm whether it started making the pictures. "
    "Please don't ask again yet; the bot will check on it."
)

#: Gateway answers: the request may have reached the provider behind the gateway.
_GATEWAY_ERRORS: Final = frozenset({502, 504})
_INVALID_KEY: Final = re.compile(r"\binvalid\s+(?:api[\s_-]*)?key\b")
_RATE_LIMIT: Final = re.compile(r"rate[\s_-]*limit|too many requests")
_CREDITS: Final = re.compile(r"credit|\bbalance\b|\bwallet\b|insufficient\s+(?:fund|credit|balance)")
_NOT_FOUND: Final = re.compile(r"not\s+found|n[o']t\s+exist|no\s+such")
#: The duplicate-request filter: "you are sending same request multiple times, spam filter ...".
_DUPLICATE_FILTER: Final = re.compile(r"same\s+request|spam\s*filter|duplicate\s+request")
#: The per-account queue limit: "Rate limit exceeded. Maximum 5 queued requests allowed."
_QUEUE_FULL: Final = re.compile(r"queued\s+requests?|queue\s+(?:is\s+)?full")
#: A failure body from fine_tune_status that is about the call, not the training.
_CALL_FAILURE: Final = re.compile(
    r"server\s+error|unavailable|timed?\s*out|try\s+again\s+later|^failed,?\s*try\s+again\.?$|"
    r"too\s+many|maintenance|overloaded"
)
#: Redirect codes that keep the method and the body (RFC 9110), so a POST may follow them.
_BODY_KEEPING_REDIRECTS: Final = frozenset({307, 308})
_MAX_REDIRECTS: Final = 3
#: The provider's own domains: a 307/308 may move the API between them (the key goes along).
_PROVIDER_DOMAINS: Final = ("modelslab.com", "stablediffusionapi.com")
_SECONDS_IN_TEXT: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec)", re.IGNORECASE)
_TRAINING_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_IMAGE_MIME: Final = re.compile(r"image/[a-z0-9.+-]+")
#: Connection errors raised before any byte of the request left this process.
_NOT_SENT_ERRORS: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


class _NotJson:
    """Marks a body that is empty or is not JSON."""

    __slots__ = ()


_NOT_JSON: Final = _NotJson()


class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('**********')"

    __str__ = __repr__


def normalize_api_root(base_url: str) -> str:
    """``https://host`` (or ``…/api``, ``…/api/v3``, ``…/api/sandbox/v3``) -> ``https://host/api/v3``."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("base_url must be an absolute http(s) URL such as https://stablediffusionapi.com")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query string or a fragment")
    path = parts.path.rstrip("/")
    lowered = path.lower()
    if lowered.endswith(("/api/v3", "/api/sandbox/v3")):
        root = path
    elif lowered.endswith("/api"):
        root = f"{path}/v3"
    else:
        root = f"{path}/api/v3"
    return urlunsplit((parts.scheme, parts.netloc, root, "", ""))


def image_api_root(api_root: str) -> str:
    """The v6 image API root next to a v3 API root: ``https://host/api/v3`` -> ``https://host/api/v6``.

    The ``/api/v3`` or ``/api/sandbox/v3`` end is replaced by ``/api/v6``; a root with neither
    end (a move to an unusual address) gives ``{scheme}://{host}/api/v6``.
    """
    parts = urlsplit(api_root)
    path = parts.path.rstrip("/")
    lowered = path.lower()
    for suffix in ("/api/sandbox/v3", "/api/v3"):
        if lowered.endswith(suffix):
            path = path[: -len(suffix)]
            break
    else:
        path = ""
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/api/v6", "", ""))


def _sniff_image(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _make_timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(connect=min(seconds, 10.0), read=seconds, write=seconds, pool=seconds)


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _retry_after_header(value: str | None) -> float | None:
    if not value:
        return None
    seconds = _seconds(value.strip())
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def endpoint_name(endpoint: str) -> str:
    """An endpoint's name for metrics: its path without ids (``fine_tune_status/42`` ->
    ``fine_tune_status``); ``other`` for a path the client does not call, so labels stay few."""
    for name in _ENDPOINT_NAMES:
        if endpoint == name or endpoint.startswith(name + "/"):
            return name
    return "other"


def _call_outcome(status: int) -> str:
    """The HTTP outcome of a provider call, for metrics (a 200 may still carry an error body)."""
    if status < 300:
        return "ok"
    if status < 400:
        return "redirect"
    if status == 429:
        return "rate_limited"
    return "client_error" if status < 500 else "server_error"


def _redacted_location(url: str) -> str:
    """Scheme, host, port and path of a URL: never its query (it could carry anything)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", "")) or "nowhere"


class ProviderClient:
    """The provider's v3 training API (submit, status, cancel, list, delete, crop) and v6 generation.

    ``image_transport`` is the transport of the separate client that downloads pictures
    (``download_image``); it defaults to ``transport``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        submit_timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        max_rate_limit_wait: float = 60.0,
        duplicate_window: float = DUPLICATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        image_transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if timeout <= 0 or submit_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_base < 0 or backoff_max < 0 or max_rate_limit_wait < 0:
            raise ValueError("backoff and wait limits must not be negative")
        self._api_root = normalize_api_root(base_url)
        self._root_path = urlsplit(self._api_root).path
        self._key = _Secret(api_key.strip())
        self._timeout = _make_timeout(timeout)
        self._submit_timeout = _make_timeout(submit_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_rate_limit_wait = max_rate_limit_wait
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._cancel_endpoints: tuple[str, str] = _CANCEL_ENDPOINTS
        self._fetch_forms: tuple[_FetchForm, _FetchForm] = ("body", "path")
        #: The v6 root a redirect of a v6 call taught; else it follows the v3 root.
        self._v6_root: str | None = None
        self._duplicate_window = duplicate_window
        self._clock = clock
        #: Recent answers of read-only calls, by endpoint: see `_read_only`.
        self._recent: dict[str, tuple[float, dict[str, Any] | list[Any]]] = {}
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,  # never resend the key to wherever a redirect points
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        #: Downloads pictures: no key, no provider headers; made on first use.
        self._images: httpx.AsyncClient | None = None
        self._image_transport = image_transport if image_transport is not None else transport
        self._closed = False
        #: Calls by endpoint and outcome, and their latency (never the key: it is in the body).
        self._metrics = metrics if metrics is not None else Metrics()

    def __repr__(self) -> str:
        return f"ProviderClient(api_root={self._api_root!r}, max_attempts={self._max_attempts})"

    @property
    def api_root(self) -> str:
        """The normalized API root, e.g. ``https://stablediffusionapi.com/api/v3``."""
        return self._api_root

    @property
    def image_api_root(self) -> str:
        """The v6 image API root, e.g. ``https://stablediffusionapi.com/api/v6``."""
        return self._root("v6")

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._recent.clear()
        images, self._images = self._images, None
        try:
            await self._http.aclose()
        finally:
            if images is not None:
                await images.aclose()

    # ------------------------------------------------------------------ endpoints

    async def submit_training(self, request: TrainingRequest) -> SubmitResult:
        """``POST /api/v3/lora_fine_tune``. Never retried; see the module docstring."""
        self._recent.pop("finetune_list", None)  # whatever the outcome, the account's list may change
        status, clean = await self._send_once(
            "lora_fine_tune", request.to_body(self._key.reveal()), "submit", "v3", "Training submission"
        )
        try:
            result = SubmitResult.from_payload(clean)
        except ValueError:
            logger.warning("Training submission answered HTTP %d without a training id", status)
            raise SubmissionUncertain(provider_message=message_text(clean), status_code=status) from None
        logger.info("Training %s submitted (%d images)", result.training_id, len(request.images))
        return result

    async def training_status(self, training_id: str) -> TrainingStatus:
        """``POST /api/v3/fine_tune_status/{id}``.

        Raises when the *call* failed (including "not found", which a proxy or a lagging
        provider can answer for a training that exists). Returns a status with
        ``failed == True`` and ``failure_reason`` when the provider says the *training* failed.
        """
        training_id = self._path_id(training_id)
        payload = await self._call_object(f"fine_tune_status/{training_id}", {}, "status")
        return TrainingStatus.from_payload(payload)

    async def cancel_training(self, training_id: str) -> str:
        """``POST /api/v3/cancle_training/{id}`` (the docs' spelling), then ``cancel_training`` on 404.

        Returns the provider's message text (an empty string if it sent none).
        """
        training_id = self._path_id(training_id)
        first, second = self._cancel_endpoints
        try:
            payload = await self._call_object(f"{first}/{training_id}", {}, "cancel")
        except TrainingNotFound as error:
            if error.status_code != 404:
                raise
            logger.info("POST %s/%s/%s answered 404; trying %s", self._root_path, first, training_id, second)
            try:
                payload = await self._call_object(f"{second}/{training_id}", {}, "cancel")
            except RequestRejected as fallback_error:
                if fallback_error.status_code in (404, 405):
                    raise error from None
                raise
            self._cancel_endpoints = (second, first)
        return self._reply_text(payload)

    async def list_trainings(self) -> list[str]:
        """``POST /api/v3/finetune_list``: the ids of the account's trained models, in order."""
        payload = await self._call("finetune_list", {}, "list")
        items: object = payload if isinstance(payload, list) else payload.get("data", _NOT_JSON)
        if items is None:
            return []
        if not isinstance(items, list):
            raise ProviderUnavailable("The image service sent an answer the bot does not understand.", retryable=False)
        ids: list[str] = []
        for item in items:
            found = extract_training_id(item) if isinstance(item, Mapping) else id_text(item)
            if found is not None and found not in ids:
                ids.append(found)
        return ids

    async def delete_training(self, training_id: str) -> str:
        """``POST /api/v3/finetune/delete/{id}``. Returns the provider's message text."""
        training_id = self._path_id(training_id)
        payload = await self._call_object(f"finetune/delete/{training_id}", {}, "delete")
        return self._reply_text(payload)

    async def text2img(self, request: GenerationRequest) -> GenerationAnswer:
        """``POST {origin}/api/v6/images/text2img``: generate pictures with a trained LoRA.

        Never retried once it may have reached the provider (a generation is billed), exactly
        like ``submit_training``: see the module docstring. Returns a ``success`` answer with the
        picture links, or a ``processing`` one to fetch with ``fetch_generation``. A failure body
        that carries the request's id (the provider took it, and the generation failed at once)
        raises :class:`GenerationFailed`; other refusals raise the classified error.
        """
        status, clean = await self._send_once(
            "images/text2img",
            request.to_body(self._key.reveal()),
            "generate",
            "v6",
            "Image generation request",
            uncertain_message=_GENERATION_UNCERTAIN,
        )
        try:
            answer = GenerationAnswer.from_payload(clean)
        except ValueError:
            logger.warning("Image generation request answered HTTP %d without pictures or a request id", status)
            raise SubmissionUncertain(
                _GENERATION_UNCERTAIN, provider_message=message_text(clean), status_code=status
            ) from None
        logger.info(
            "Image generation %s: %s (%d pictures asked, %d links)",
            answer.request_id or "without id",
            answer.status,
            request.samples,
            len(answer.image_urls),
        )
        return answer

    async def fetch_generation(self, request_id: str) -> GenerationAnswer:
        """``POST {origin}/api/v6/images/fetch`` with ``request_id``; ``images/fetch/{id}`` on 404/405.

        The form that worked is tried first from then on. Retried on 5xx, timeouts, network
        errors and bodies that are not JSON; answers are never reused. Raises
        :class:`GenerationFailed` when the generation failed or the provider no longer knows
        the request. The answer's ``fetch_result`` link is never called.
        """
        request_id = str(request_id).strip()
        if not valid_request_id(request_id):
            raise ValueError("request_id is not a generation request id")
        first, second = self._fetch_forms
        try:
            payload = await self._fetch_once(first, request_id)
        except (GenerationFailed, RequestRejected) as error:
            if error.status_code not in (404, 405):
                raise
            logger.info(
                "The %s form of images/fetch answered HTTP %d; trying the %s form", first, error.status_code, second
            )
            try:
                payload = await self._fetch_once(second, request_id)
            except (GenerationFailed, RequestRejected) as fallback_error:
                if fallback_error.status_code in (404, 405):
                    raise error from None
                if isinstance(fallback_error, GenerationFailed):
                    self._fetch_forms = (second, first)  # that form answered: it exists
                raise
            self._fetch_forms = (second, first)
        try:
            return GenerationAnswer.from_payload(payload, request_id=request_id)
        except ValueError:
            logger.warning("images/fetch answered a body without pictures or a known status")
            raise ProviderUnavailable(
                "The image service sent an answer the bot does not understand.",
                provider_message=message_text(payload),
                retryable=False,
            ) from None

    async def download_image(self, url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> tuple[bytes, str]:
        """GET a picture from an output link; returns its bytes and its content type.

        Uses a separate HTTP client without the key or the provider's headers, follows at most
        3 redirects, and stops reading past ``max_bytes``. A 5xx, 429, timeout or network error
        is retried twice with backoff. Raises :class:`ImageDownloadFailed` (``expired`` for a
        403/404/410 link) for anything that does not yield an image.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ImageDownloadFailed("The picture's link is not a web address.")
        if self._closed:
            raise RuntimeError("The provider client has been closed.")
        if self._images is None:
            self._images = httpx.AsyncClient(
                transport=self._image_transport,
                timeout=self._timeout,
                follow_redirects=True,
                max_redirects=_DOWNLOAD_MAX_REDIRECTS,
                headers={"Accept": "image/*"},
            )
        where = _redacted_location(url)  # a signed link's query is a credential of sorts
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._download_once(self._images, url, where, max_bytes)
            except ImageDownloadFailed as error:
                if not error.retryable or attempt >= _DOWNLOAD_ATTEMPTS:
                    raise
                reason = self._describe(error)
            wait = self._backoff(attempt)
            logger.warning(
                "GET %s failed (%s); retry %d of %d in %.2f s", where, reason, attempt, _DOWNLOAD_ATTEMPTS - 1, wait
            )
            await self._sleep(wait)

    async def probe(self, *, seconds: float = 10.0) -> None:
        """One read-only call (``finetune_list``) without retries: raises whatever it meets.

        Used at start-up to catch a base URL that redirects, and by checks of the setup.
        """
        await self._read_only("finetune_list", {}, "list", limits=_make_timeout(seconds))

    # ------------------------------------------------------------------ plumbing

    async def _send_once(
        self,
        endpoint: str,
        body: Mapping[str, object],
        op: _Operation,
        api: _Api,
        what: str,
        *,
        uncertain_message: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST a request that may start (and bill) work: never retried; see the module docstring.

        Returns the HTTP status and the redacted JSON object of an answer that is not an error.
        """
        try:
            response = await self._post(endpoint, body, self._submit_timeout, api=api)
        except _NOT_SENT_ERRORS as exc:
            raise ProviderUnavailable() from exc
        except httpx.RequestError as exc:
            logger.warning("%s got no answer (%s); it may have started", what, type(exc).__name__)
            raise SubmissionUncertain(uncertain_message) from exc

        status = response.status_code
        if 300 <= status < 400:
            raise self._redirected(endpoint, response, api)
        payload = self._decode(response)
        if status in _GATEWAY_ERRORS:
            # A proxy gave up waiting on the provider, which may well have started the work.
            logger.warning("%s answered HTTP %d from a gateway; it may have started", what, status)
            raise SubmissionUncertain(uncertain_message, status_code=status)
        if isinstance(payload, dict):
            error = self._classify(status, payload, response.headers, op)
            if error is not None:
                raise self._submission_error(error, what, uncertain_message)
            clean: dict[str, Any] = redact(payload, self._key.reveal())
            return status, clean
        if 400 <= status < 500:
            # Refused before processing; the status code alone decides the error.
            error = self._classify(status, {}, response.headers, op)
            if error is not None:
                raise self._submission_error(error, what, uncertain_message)
        logger.warning("%s answered HTTP %d without a JSON object", what, status)
        raise SubmissionUncertain(uncertain_message, status_code=status)

    async def _fetch_once(self, form: _FetchForm, request_id: str) -> dict[str, Any]:
        if form == "body":
            return await self._call_object("images/fetch", {"request_id": request_id}, "fetch", api="v6")
        return await self._call_object(f"images/fetch/{request_id}", {}, "fetch", api="v6")

    async def _download_once(
        self, client: httpx.AsyncClient, url: str, where: str, max_bytes: int
    ) -> tuple[bytes, str]:
        """One GET of a picture. Raises :class:`ImageDownloadFailed` (``retryable`` when transient)."""
        started = time.perf_counter()
        try:
            async with client.stream("GET", url) as response:
                status = response.status_code
                logger.debug("GET %s -> %d in %.0f ms", where, status, (time.perf_counter() - started) * 1000)
                if status in _EXPIRED_LINK:
                    raise ImageDownloadFailed(status_code=status, expired=True)
                if status == 429 or status >= 500:
                    raise ImageDownloadFailed(status_code=status, retryable=True)
                if not 200 <= status < 300:
                    raise ImageDownloadFailed(status_code=status)
                mime = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if mime not in _UNTYPED and (not _IMAGE_MIME.fullmatch(mime) or mime == "image/svg+xml"):
                    raise ImageDownloadFailed("The image service's link did not lead to a picture.", status_code=status)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ImageDownloadFailed("The picture is too large to download.", status_code=status)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ImageDownloadFailed("The picture is too large to download.", status_code=status)
                    chunks.append(chunk)
        except httpx.TooManyRedirects as exc:
            raise ImageDownloadFailed("The picture's link redirects too often.") from exc
        except httpx.UnsupportedProtocol as exc:
            raise ImageDownloadFailed("The picture's link redirects to something that is not a web address.") from exc
        except httpx.TransportError as exc:
            logger.debug("GET %s failed: %s", where, type(exc).__name__)
            raise ImageDownloadFailed(retryable=True) from exc
        except (httpx.RequestError, httpx.InvalidURL) as exc:
            raise ImageDownloadFailed() from exc
        data = b"".join(chunks)
        if not data:
            raise ImageDownloadFailed("The image service's link gave an empty picture.", status_code=status)
        if mime in _UNTYPED:
            sniffed = _sniff_image(data)
            if sniffed is None:
                raise ImageDownloadFailed("The image service's link did not lead to a picture.", status_code=status)
            mime = sniffed
        return data, mime

    async def _call_object(
        self, endpoint: str, extra: Mapping[str, object], op: _Operation, *, api: _Api = "v3"
    ) -> dict[str, Any]:
        payload = await self._call(endpoint, extra, op, api=api)
        if isinstance(payload, dict):
            return payload
        raise ProviderUnavailable("The image service sent an answer the bot does not understand.", retryable=False)

    async def _call(
        self, endpoint: str, extra: Mapping[str, object], op: _Operation, *, api: _Api = "v3"
    ) -> dict[str, Any] | list[Any]:
        """One read-only (repeatable) call with retries. Returns the redacted JSON body."""
        attempt = 0
        while True:
            attempt += 1
            path = self._path(endpoint, api)
            try:
                return await self._read_only(endpoint, extra, op, api=api)
            except RateLimited as error:
                wait = error.retry_after if error.retry_after is not None else self._backoff(attempt)
                if wait > self._max_rate_limit_wait:
                    logger.warning("POST %s rate limited for %.0f s; not waiting", path, wait)
                    raise
                if attempt >= self._max_attempts:
                    logger.warning("POST %s still rate limited after %d attempts", path, attempt)
                    raise
                reason = "rate limited"
            except ProviderUnavailable as error:
                if not error.retryable:
                    raise
                reason = self._describe(error)
                if attempt >= self._max_attempts:
                    logger.warning("POST %s failed (%s); giving up after %d attempts", path, reason, attempt)
                    raise
                wait = self._backoff(attempt)
            logger.warning(
                "POST %s failed (%s); retry %d of %d in %.2f s",
                path,
                reason,
                attempt,
                self._max_attempts - 1,
                wait,
            )
            await self._sleep(wait)

    async def _read_only(
        self,
        endpoint: str,
        extra: Mapping[str, object],
        op: _Operation,
        *,
        limits: httpx.Timeout | None = None,
        api: _Api = "v3",
    ) -> dict[str, Any] | list[Any]:
        """One attempt; a status or list call answered within the duplicate window is not sent again.

        The provider refuses a request identical to one it got in the last 30 s (its spam
        filter, which then asks for a 30 s wait). A poll and a /status, or two listings, can
        easily collide, so their successful answers are reused within that window instead.
        """
        cacheable = op in ("status", "list") and api == "v3" and not extra and self._duplicate_window > 0
        now = self._clock()
        if cacheable:
            recent = self._recent.get(endpoint)
            if recent is not None and now - recent[0] < self._duplicate_window:
                return recent[1]
        payload = await self._attempt(endpoint, extra, op, limits=limits, api=api)
        if cacheable:
            if len(self._recent) > 10_000:
                self._recent = {k: v for k, v in self._recent.items() if now - v[0] < self._duplicate_window}
            self._recent[endpoint] = (self._clock(), payload)
        return payload

    async def _attempt(
        self,
        endpoint: str,
        extra: Mapping[str, object],
        op: _Operation,
        *,
        limits: httpx.Timeout | None = None,
        api: _Api = "v3",
    ) -> dict[str, Any] | list[Any]:
        body = {"key": self._key.reveal(), **extra}
        try:
            response = await self._post(endpoint, body, limits or self._timeout, api=api)
        except httpx.RequestError as exc:
            raise ProviderUnavailable() from exc
        status = response.status_code
        if 300 <= status < 400:
            raise self._redirected(endpoint, response, api)
        payload = self._decode(response)
        error = self._classify(status, payload if isinstance(payload, dict) else {}, response.headers, op)
        if error is not None:
            raise error
        if isinstance(payload, _NotJson):
            raise ProviderUnavailable(status_code=status)
        if isinstance(payload, dict) or (op == "list" and isinstance(payload, list)):
            cleaned: dict[str, Any] | list[Any] = redact(payload, self._key.reveal())
            return cleaned
        raise ProviderUnavailable(
            "The image service sent an answer the bot does not understand.", status_code=status, retryable=False
        )

    def _root(self, api: _Api) -> str:
        """The current root of an API family: v6 follows the (possibly moved) v3 root unless it moved itself."""
        if api == "v3":
            return self._api_root
        return self._v6_root or image_api_root(self._api_root)

    def _path(self, endpoint: str, api: _Api) -> str:
        return f"{urlsplit(self._root(api)).path}/{endpoint}"

    async def _post(
        self, endpoint: str, body: Mapping[str, object], limits: httpx.Timeout, *, api: _Api = "v3"
    ) -> httpx.Response:
        """POST, following a 307/308 (method and body kept) to the provider's own hosts only."""
        url = f"{self._root(api)}/{endpoint}"
        name = endpoint_name(endpoint)
        for hop in range(_MAX_REDIRECTS + 1):
            path = urlsplit(url).path
            started = time.perf_counter()
            try:
                response = await self._http.post(url, json=body, timeout=limits)
            except httpx.RequestError as exc:
                seconds = time.perf_counter() - started
                outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else "network_error"
                self._metrics.provider_request(name, outcome, seconds)
                logger.debug("POST %s failed after %.0f ms: %s", path, seconds * 1000, type(exc).__name__)
                raise
            seconds = time.perf_counter() - started
            self._metrics.provider_request(name, _call_outcome(response.status_code), seconds)
            logger.debug("POST %s -> %d in %.0f ms", path, response.status_code, seconds * 1000)
            status = response.status_code
            if status not in _BODY_KEEPING_REDIRECTS or "location" not in response.headers:
                return response
            target = urljoin(url, response.headers["location"])
            if hop == _MAX_REDIRECTS or not self._may_follow(target, api):
                raise self._redirected(endpoint, response, api)
            self._moved(endpoint, target, api)
            url = target
        raise AssertionError("unreachable")  # pragma: no cover

    def _may_follow(self, target: str, api: _Api = "v3") -> bool:
        """A redirect target the key may be sent to: the configured host, or the provider's domains."""
        parts, configured = urlsplit(target), urlsplit(self._root(api))
        host = (parts.hostname or "").lower()
        if host == (configured.hostname or "").lower():
            return parts.scheme == "https" or parts.scheme == configured.scheme
        provider = any(host == domain or host.endswith("." + domain) for domain in _PROVIDER_DOMAINS)
        return provider and parts.scheme == "https"

    def _moved(self, endpoint: str, target: str, api: _Api = "v3") -> None:
        """Use the address a permanent or temporary redirect named from now on, and say so once."""
        parts = urlsplit(target)
        suffix = f"/{endpoint}"
        if parts.query or not parts.path.endswith(suffix):
            return  # not the same endpoint at a new root: follow this time, learn nothing
        root = urlunsplit((parts.scheme, parts.netloc, parts.path[: -len(suffix)], "", ""))
        if root == self._root(api):
            return
        if api == "v6":
            logger.warning(
                "The provider's image API moved from %s to %s; following the redirect.",
                _redacted_location(self._root(api)),
                _redacted_location(root),
            )
            self._v6_root = root
            return
        logger.warning(
            "The provider's API moved from %s to %s; following the redirect. Set SDAPI_BASE_URL to the new "
            "address to skip the extra round trip.",
            _redacted_location(self._api_root),
            _redacted_location(root),
        )
        self._api_root = root
        self._root_path = urlsplit(root).path

    @staticmethod
    def _decode(response: httpx.Response) -> object:
        content = response.content
        if not content.strip():
            return _NOT_JSON
        try:
            decoded: object = json.loads(content)
        except (ValueError, RecursionError):
            return _NOT_JSON
        return decoded

    def _classify(
        self, status: int, payload: Mapping[str, Any], headers: httpx.Headers, op: _Operation
    ) -> ProviderError | None:
        """The error an answer stands for, or ``None`` when it is a success."""
        body_status = payload.get("status")
        failed = isinstance(body_status, str) and body_status.strip().lower() in FAILURE_BODY_STATUSES
        if status < 400 and not failed:
            return None
        key = self._key.reveal()
        raw_message = message_text(payload)
        message = mask(raw_message, key) if raw_message else None
        lowered = (message or "").lower()
        if status == 401 or _INVALID_KEY.search(lowered):
            return InvalidApiKey(provider_message=message, status_code=status)
        if status == 429 or _RATE_LIMIT.search(lowered) or _QUEUE_FULL.search(lowered):
            tip = mask(tip, key) if (tip := tip_text(payload)) else None
            retry_after = self._retry_after(payload, headers, message, tip)
            hints = f"{lowered} {(tip or '').lower()}"
            kind: RateLimitKind = "unknown"
            if _DUPLICATE_FILTER.search(hints):
                kind = "duplicate"
            elif _QUEUE_FULL.search(hints):
                kind = "queue_full"
            return RateLimited(retry_after, provider_message=message, status_code=status, kind=kind)
        if status == 402 or _CREDITS.search(lowered):
            return InsufficientCredits(provider_message=message, status_code=status)
        if status >= 500:
            return ProviderUnavailable(provider_message=message, status_code=status)
        if op in _TRAINING_OPERATIONS and (status == 404 or _NOT_FOUND.search(lowered)):
            return TrainingNotFound(provider_message=message, status_code=status)
        #: A request-validation object (``{"prompt": ["…required."]}``) is always about the call.
        validation = isinstance(payload.get("message", payload.get("messege")), Mapping)
        if op == "fetch":
            if _NOT_FOUND.search(lowered):
                return GenerationFailed(provider_message=message, status_code=status)  # the request is lost
            if status < 400:
                # A failure body at HTTP 2xx from a fetch: about the call, or the generation?
                if _CALL_FAILURE.search(lowered):
                    return ProviderUnavailable(provider_message=message, status_code=status)
                if not validation:
                    return GenerationFailed(provider_message=message, status_code=status)
        if op == "generate" and status < 400 and id_text(payload.get("id")) is not None and not validation:
            # The provider took the request (it has an id) and says at once that it failed.
            return GenerationFailed(provider_message=message, status_code=status)
        if op == "status" and status < 400:
            # A failure body at HTTP 2xx from fine_tune_status: about the call, or the training?
            if _CALL_FAILURE.search(lowered):
                return ProviderUnavailable(provider_message=message, status_code=status)
            if not validation:
                return None  # the training failed; TrainingStatus.from_payload reads the reason
        return RequestRejected(provider_message=message, status_code=status)

    @staticmethod
    def _submission_error(
        error: ProviderError, what: str = "Training submission", uncertain_message: str | None = None
    ) -> ProviderError:
        """A rate limit that does not prove the submission was refused makes it uncertain."""
        if isinstance(error, RateLimited) and not error.definitely_not_accepted:
            logger.warning("%s hit the provider's duplicate filter or an unexplained rate limit", what)
            return SubmissionUncertain(
                uncertain_message, provider_message=error.provider_message, status_code=error.status_code
            )
        return error

    @staticmethod
    def _retry_after(
        payload: Mapping[str, Any], headers: httpx.Headers, message: str | None, tip: str | None
    ) -> float | None:
        for name in ("retry_after", "retry-after", "retryAfter"):
            seconds = _seconds(payload.get(name))
            if seconds is not None:
                return seconds
        seconds = _retry_after_header(headers.get("retry-after"))
        if seconds is not None:
            return seconds
        # SDA's spam filter: "please wait for 30 seconds and try again".
        for text in (tip, message):
            match = _SECONDS_IN_TEXT.search(text or "")
            if match:
                return float(match.group(1))
        return None

    def _redirected(self, endpoint: str, response: httpx.Response, api: _Api = "v3") -> ProviderMisconfigured:
        location = response.headers.get("location", "")
        target = _redacted_location(urljoin(str(response.request.url), location)) if location else "nowhere"
        logger.warning(
            "POST %s was redirected (HTTP %d) to %s; check SDAPI_BASE_URL",
            self._path(endpoint, api),
            response.status_code,
            target,
        )
        return ProviderMisconfigured(target, status_code=response.status_code)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(backoff_max, backoff_base * 2 ** (attempt - 1))]."""
        ceiling = min(self._backoff_max, self._backoff_base * 2.0 ** min(attempt - 1, 60))
        return max(0.0, min(ceiling, self._rng.uniform(0.0, ceiling)))

    @staticmethod
    def _describe(error: ProviderError) -> str:
        cause = error.__cause__
        if cause is not None:
            return type(cause).__name__
        if error.status_code is not None:
            return f"HTTP {error.status_code}"
        return type(error).__name__

    def _path_id(self, training_id: str) -> str:
        text = str(training_id).strip()
        if not _TRAINING_ID.fullmatch(text):
            raise TrainingNotFound("That doesn't look like a valid training id.")
        return text

    @staticmethod
    def _reply_text(payload: Mapping[str, Any]) -> str:
        text = message_text(payload)
        if text:
            return text
        data = payload.get("data")
        return data.strip() if isinstance(data, str) else ""
