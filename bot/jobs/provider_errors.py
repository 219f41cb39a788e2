"""What can go wrong when the provider is asked: the errors its client raises, in the domain's terms.

Every error is a :class:`ProviderError` with ``user_message`` (a short sentence that is safe to
show a Discord user), ``provider_message`` (the provider's own text, if any) and ``status_code``
(the HTTP status, if a response came). None of them ever contains the API key: the client masks
it in the provider's text before building an error.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

#: Provider text shown to users is cut to this length.
_MAX_SHOWN = 300


def _shorten(text: str, limit: int = _MAX_SHOWN) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class ProviderError(Exception):
    """Base class of everything the provider client raises."""

    default_user_message: ClassVar[str] = "The image service returned an error. Please try again later."

    user_message: str
    provider_message: str | None
    status_code: int | None

    def __init__(
        self,
        user_message: str | None = None,
        *,
        provider_message: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.provider_message = provider_message
        self.status_code = status_code
        self.user_message = user_message or self._default_user_message()
        super().__init__(self.user_message)

    def _default_user_message(self) -> str:
        return self.default_user_message

    def __str__(self) -> str:
        text = self.user_message
        if self.provider_message and self.provider_message not in text:
            text += f" (provider said: {_shorten(self.provider_message)})"
        if self.status_code is not None:
            text += f" [HTTP {self.status_code}]"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(user_message={self.user_message!r}, "
            f"provider_message={self.provider_message!r}, status_code={self.status_code!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive Exception's default pickling; restore state.
        return (_restore, (type(self), dict(self.__dict__)))


def _restore(cls: type[ProviderError], state: dict[str, Any]) -> ProviderError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("user_message", ""))
    error.__dict__.update(state)
    return error


class InvalidApiKey(ProviderError):
    """The provider refused the API key (HTTP 401 or an "Invalid Api Key" body)."""

    default_user_message = (
        "The image service rejected the bot's API key. Please ask the bot owner to check the configuration."
    )


class InsufficientCredits(ProviderError):
    """The provider account cannot pay (HTTP 402 or a credits/balance/wallet message)."""

    default_user_message = "The bot's image-service account is out of credits. Please ask the bot owner to top it up."


#: Why the provider refused with a rate limit; it decides whether a submission may be resent.
#: ``queue_full``: the account's queue of requests is full ("Maximum 5 queued requests allowed",
#: with ``retry_after``): the request was not accepted, so resending it later is safe.
#: ``duplicate``: the 30 s duplicate-request filter ("you are sending same request multiple
#: times"): an identical request already arrived, so a submission must not be resent.
#: ``unknown``: neither marker; a bare "Rate limit exceeded".
RateLimitKind = Literal["queue_full", "duplicate", "unknown"]


class RateLimited(ProviderError):
    """Too many requests (HTTP 429 or a "Rate limit exceeded" body).

    ``retry_after`` is the wait in seconds the provider asked for, when it said; ``kind`` tells
    the queue-full refusal from the duplicate-request filter (see :data:`RateLimitKind`).
    """

    retry_after: float | None
    kind: RateLimitKind

    def __init__(
        self,
        retry_after: float | None = None,
        user_message: str | None = None,
        *,
        provider_message: str | None = None,
        status_code: int | None = None,
        kind: RateLimitKind = "unknown",
    ) -> None:
        if retry_after is not None and (not math.isfinite(retry_after) or retry_after < 0):
            retry_after = None
        self.retry_after = retry_after
        self.kind = kind
        super().__init__(user_message, provider_message=provider_message, status_code=status_code)

    @property
    def definitely_not_accepted(self) -> bool:
        """True when the provider certainly did not take the request (safe to resend later)."""
        return self.kind == "queue_full" or (self.kind == "unknown" and self.retry_after is not None)

    def _default_user_message(self) -> str:
        if self.retry_after is None:
            return "The image service is busy right now. Please try again in a little while."
        seconds = max(1, math.ceil(self.retry_after))
        return f"The image service is busy right now. Please try again in about {seconds} seconds."

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, retry_after={self.retry_after!r}, kind={self.kind!r})"


class RequestRejected(ProviderError):
    """The provider refused the request (another 4xx, or HTTP 200 with status error/failed)."""

    def _default_user_message(self) -> str:
        if self.provider_message:
            return f"The image service rejected the request: {_shorten(self.provider_message)}"
        return "The image service rejected the request."


class TrainingNotFound(RequestRejected):
    """The training id is unknown to the provider (404, or "does not exist"/"not found")."""

    def _default_user_message(self) -> str:
        return "The image service has no training with that id."


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or answered unusably (5xx, network, timeouts, not JSON).

    ``retryable`` says whether trying the same call again later may help (a redirect or an
    unexpected response shape will not go away by retrying).
    """

    default_user_message = "The image service is not responding right now. Please try again later."

    retryable: bool

    def __init__(
        self,
        user_message: str | None = None,
        *,
        provider_message: str | None = None,
        status_code: int | None = None,
        retryable: bool = True,
    ) -> None:
        self.retryable = retryable
        super().__init__(user_message, provider_message=provider_message, status_code=status_code)


class ProviderMisconfigured(ProviderUnavailable):
    """The configured base URL answers a POST with a redirect the bot must not follow.

    A 301/302/303 would turn the POST into a GET (and drop the body with the key); a 307/308 to
    a host that is not the provider's would hand the key to someone else. ``location`` is where
    the redirect pointed (scheme, host and path only).
    """

    location: str

    def __init__(self, location: str, *, status_code: int | None = None) -> None:
        self.location = location
        super().__init__(
            "The image service is not reachable with the bot's current settings. "
            "Please ask the bot owner to check them.",
            status_code=status_code,
            retryable=False,
        )


class SubmissionUncertain(ProviderError):
    """A submission (a training, or a text2img request) may have reached the provider, but no
    usable answer came back.

    Do not resubmit automatically: a second training or generation costs money. Reconcile first
    (for example with ``list_trainings``, or wait for the webhook).
    """

    default_user_message = (
        "The image service did not confirm whether the training started. "
        "Please don't start it again yet; the bot will check on it."
    )


class GenerationFailed(ProviderError):
    """The provider says the image generation itself failed, or no longer knows the request.

    Raised by ``fetch_generation`` for a failure body that is not about the call (key, rate
    limit, credits, a server error), and for "not found": the provider lost the request, so
    fetching it again will not help. Also raised by ``text2img`` when the provider took the
    request (it answers with the request's id) and reports at once that it failed.
    ``provider_message`` holds the provider's reason, when it gave one.
    """

    def _default_user_message(self) -> str:
        if self.provider_message:
            return f"The image service could not make these pictures: {_shorten(self.provider_message)}"
        return "The image service could not make these pictures."


class ImageDownloadFailed(ProviderError):
    """A generated picture could not be downloaded from the provider's output link.

    ``expired`` is true when the link answered 403, 404 or 410 (output links are temporary), and
    ``retryable`` when trying again later may help (a 5xx, a timeout or a network error that
    outlasted the client's own retries). A picture that is too large or is not an image, and a
    link that is not http(s), are neither.
    """

    default_user_message = "A picture could not be downloaded from the image service."

    expired: bool
    retryable: bool

    def __init__(
        self,
        user_message: str | None = None,
        *,
        provider_message: str | None = None,
        status_code: int | None = None,
        expired: bool = False,
        retryable: bool = False,
    ) -> None:
        self.expired = expired
        self.retryable = retryable
        super().__init__(user_message, provider_message=provider_message, status_code=status_code)

    def _default_user_message(self) -> str:
        if self.expired:
            return "The picture's link at the image service has expired."
        return self.default_user_message


__all__ = [
    "GenerationFailed",
    "ImageDownloadFailed",
    "InsufficientCredits",
    "InvalidApiKey",
    "ProviderError",
    "ProviderMisconfigured",
    "ProviderUnavailable",
    "RateLimitKind",
    "RateLimited",
    "RequestRejected",
    "SubmissionUncertain",
    "TrainingNotFound",
]
