"""Logging with a last line of defence against leaking secrets.

Code never logs secrets on purpose; this filter makes sure that a token, an API key or a
webhook path secret that slips into a message, an argument or a traceback is masked anyway.
Lines are plain text, or (LOG_FORMAT=json) one JSON object per line; the filter masks both.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

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

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and `exception`
    (the formatted traceback) and `stack` when the record has them.

    The redacting filter runs first, on the handler; the exception and stack text are masked
    again here, since a formatter may format a traceback the filter never saw.
    """

    def __init__(self, redacting: RedactingFilter | None = None) -> None:
        super().__init__()
        self._redacting = redacting

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self._clean(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exception"] = self._clean(record.exc_text)
        if record.stack_info:
            entry["stack"] = self._clean(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)

    def _clean(self, text: str) -> str:
        return self._redacting.redact(text) if self._redacting is not None else text


def make_formatter(fmt: Literal["text", "json"] = "text") -> logging.Formatter:
    """The formatter of LOG_FORMAT: plain text lines, or JSON lines."""
    if fmt == "json":
        return JsonFormatter(_filter)
    return logging.Formatter(_TEXT_FORMAT)


def redactor() -> RedactingFilter:
    """The process-wide filter (register more secrets with ``redactor().add``)."""
    return _filter


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), fmt: Literal["text", "json"] = "text") -> None:
    """Configure the root logger once: one stream handler, the redacting filter on it.

    `fmt="json"` writes one JSON object per line, and routes Python warnings through logging
    too, so that nothing else lands on the stream between the lines.
    """
    _filter.add(*secrets)
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_lorabot", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._lorabot = True  # type: ignore[attr-defined]
        handler.addFilter(_filter)
        root.addHandler(handler)
    handler.setFormatter(make_formatter(fmt))
    if fmt == "json":
        logging.captureWarnings(True)
    # Libraries that log URLs or bodies at INFO are kept quiet; their warnings still show.
    for noisy in ("httpx", "httpcore", "aiohttp.access", "discord.gateway", "discord.http"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
