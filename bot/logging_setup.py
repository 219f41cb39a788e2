"""Logging with a last line of defence against leaking secrets.

Code never logs secrets on purpose; this filter makes sure that a token, an API key or a
webhook path secret that slips into a message, an argument or a traceback is masked anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[redacted]"

#: Webhook URLs carry a per-job secret as their last path segment.
_WEBHOOK_SECRET = re.compile(r"(/webhooks/training/\d+/)[A-Za-z0-9_\-]+")
#: Anything that looks like a JSON "key": "..." field (the provider's API key travels in bodies).
_JSON_KEY = re.compile(r"""(["']key["']\s*:\s*["'])[^"']*(["'])""")


class RedactingFilter(logging.Filter):
    """Masks known secret values and secret-shaped substrings in every record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        # Very short strings would mask ordinary words; real secrets are long.
        self._secrets.update(s for s in secrets if s and len(s) >= 8)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _WEBHOOK_SECRET.sub(rf"\g<1>{MASK}", text)
        return _JSON_KEY.sub(rf"\g<1>{MASK}\g<2>", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_filter = RedactingFilter()


def redactor() -> RedactingFilter:
    """The process-wide filter (register more secrets with ``redactor().add``)."""
    return _filter


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once: one stream handler, the redacting filter on it."""
    _filter.add(*secrets)
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_lorabot", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._lorabot = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handler.addFilter(_filter)
        root.addHandler(handler)
    # Libraries that log URLs or bodies at INFO are kept quiet; their warnings still show.
    for noisy in ("httpx", "httpcore", "aiohttp.access", "discord.gateway", "discord.http"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
