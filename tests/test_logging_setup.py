"""The redacting filter: registered secrets, webhook path secrets and JSON "key" fields never reach a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.logging_setup import MASK, RedactingFilter, redactor, setup_logging

SECRET = "sk-live-0123456789abcdefSECRET"
WEBHOOK_SECRET = "Zm9vYmFyYmF6cXV4LXNlY3JldC1wYXJ0"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, RedactingFilter]]:
    """A private logger whose one handler carries a fresh filter with SECRET registered."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    redacting = RedactingFilter([SECRET])
    handler.addFilter(redacting)
    logger = logging.getLogger(f"tests.redaction.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, redacting
    logger.removeHandler(handler)


def test_secret_in_the_message_is_masked(capture) -> None:
    logger, stream, _ = capture
    logger.warning(f"calling the API with {SECRET} now")
    assert stream.getvalue() == f"WARNING calling the API with {MASK} now\n"


def test_secret_in_the_arguments_is_masked(capture) -> None:
    logger, stream, _ = capture
    logger.info("key=%s user=%d", SECRET, 42)
    logger.info("mapping %(key)s", {"key": SECRET})
    assert SECRET not in stream.getvalue()
    assert stream.getvalue() == f"INFO key={MASK} user=42\nINFO mapping {MASK}\n"


def test_secret_in_an_exception_traceback_is_masked(capture) -> None:
    logger, stream, _ = capture

    def fail(token: str) -> None:
        raise RuntimeError(f"upstream refused token {token}")

    try:
        fail(SECRET)
    except RuntimeError:
        logger.exception("request failed")
    output = stream.getvalue()
    assert "Traceback (most recent call last)" in output
    assert f"RuntimeError: upstream refused token {MASK}" in output
    assert SECRET not in output


def test_secret_in_stack_info_is_masked() -> None:
    redacting = RedactingFilter([SECRET])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "with stack", (), None)
    record.stack_info = f'Stack (most recent call last):\n  File "a.py", line 3, in f\n    call("{SECRET}")'
    redacting.filter(record)
    assert SECRET not in record.stack_info
    assert f'call("{MASK}")' in record.stack_info


def test_webhook_url_secrets_are_masked(capture) -> None:
    logger, stream, _ = capture
    url = f"https://bot.example.org/webhooks/training/42/{WEBHOOK_SECRET}"
    logger.info("sending webhook %s", url)
    logger.info("POST /webhooks/training/7/%s 200", WEBHOOK_SECRET)
    output = stream.getvalue()
    assert WEBHOOK_SECRET not in output
    assert f"https://bot.example.org/webhooks/training/42/{MASK}" in output
    assert f"POST /webhooks/training/7/{MASK} 200" in output


def test_json_key_fields_are_masked(capture) -> None:
    logger, stream, _ = capture
    logger.info('body {"key": "unregistered-api-key", "instance_prompt": "photo"}')
    logger.info("dict %s", {"key": "another-key-value", "seed": "0"})
    output = stream.getvalue()
    assert "unregistered-api-key" not in output
    assert "another-key-value" not in output
    assert f'"key": "{MASK}"' in output
    assert f"'key': '{MASK}'" in output
    assert '"instance_prompt": "photo"' in output


def test_clean_records_are_left_untouched() -> None:
    redacting = RedactingFilter([SECRET])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "job %s moved to %s", (5, "training_started"), None)
    assert redacting.filter(record) is True
    assert (record.msg, record.args) == ("job %s moved to %s", (5, "training_started"))


def test_short_strings_are_not_registered_as_secrets() -> None:
    redacting = RedactingFilter(["", "abc", "job"])
    assert redacting.redact("the job abc finished") == "the job abc finished"
    redacting.add("a-long-enough-secret")
    assert redacting.redact("x a-long-enough-secret y") == f"x {MASK} y"


def test_setup_logging_installs_one_redacting_handler_on_root() -> None:
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        secret = "setup-logging-secret-" + "q" * 20
        setup_logging("DEBUG", secrets=[secret])
        setup_logging("DEBUG")  # idempotent: still one handler of ours
        ours = [h for h in root.handlers if getattr(h, "_lorabot", False)]
        assert len(ours) == 1
        stream = io.StringIO()
        ours[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("bot.some.module").info("token is %s", secret)
        assert secret not in stream.getvalue()
        assert f"token is {MASK}" in stream.getvalue()
        assert redactor().redact(secret) == MASK
        assert logging.getLogger("httpx").level >= logging.WARNING
    finally:
        for handler in root.handlers[:]:
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)


# -- LOG_FORMAT=json -------------------------------------------------------------------------------


@pytest.fixture
def json_capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger whose handler formats JSON lines, with the redacting filter (SECRET registered)."""
    from bot.logging_setup import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redacting = RedactingFilter([SECRET])
    handler.setFormatter(JsonFormatter(redacting))
    handler.addFilter(redacting)
    logger = logging.getLogger(f"tests.json.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict]:
    import json

    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_and_message(json_capture) -> None:
    from datetime import datetime

    logger, stream = json_capture
    logger.info("job %s moved to %s", 5, "training_started")
    logger.warning('a "quoted"\nmulti-line message')
    first, second = json_lines(stream)  # one object per line, even for a message with a newline
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == logger.name
    assert first["message"] == "job 5 moved to training_started"
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert second["message"] == 'a "quoted"\nmulti-line message' and second["level"] == "WARNING"


def test_json_lines_mask_secrets_in_messages_and_in_the_exception_text(json_capture) -> None:
    logger, stream = json_capture
    logger.info("key=%s webhook /webhooks/training/7/%s", SECRET, WEBHOOK_SECRET)
    try:
        raise RuntimeError(f"upstream refused token {SECRET} at /webhooks/training/3/{WEBHOOK_SECRET}")
    except RuntimeError:
        logger.exception("request failed with %s", SECRET)
    message, failure = json_lines(stream)
    assert message["message"] == f"key={MASK} webhook /webhooks/training/7/{MASK}"
    assert failure["message"] == f"request failed with {MASK}"
    assert failure["exception"].startswith("Traceback (most recent call last)")
    assert f"RuntimeError: upstream refused token {MASK} at /webhooks/training/3/{MASK}" in failure["exception"]
    output = stream.getvalue()
    assert SECRET not in output and WEBHOOK_SECRET not in output


def test_the_json_formatter_masks_a_traceback_the_filter_never_saw() -> None:
    """A record formatted without passing the filter (another handler's path) is masked too."""
    import json
    import sys

    from bot.logging_setup import JsonFormatter

    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter(RedactingFilter([SECRET])).format(record)
    assert SECRET not in line
    assert f"ValueError: bad key {MASK}" in json.loads(line)["exception"]
    assert SECRET not in (record.exc_text or "")  # nor is the cached text left unmasked


def test_setup_logging_json_switches_the_one_handler_to_json_lines() -> None:
    import json

    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        secret = "json-logging-secret-" + "z" * 20
        setup_logging("INFO", secrets=[secret], fmt="json")
        ours = [h for h in root.handlers if getattr(h, "_lorabot", False)]
        assert len(ours) == 1
        stream = io.StringIO()
        ours[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("bot.some.module").info("token is %s", secret)
        entry = json.loads(stream.getvalue())
        assert entry["message"] == f"token is {MASK}" and entry["logger"] == "bot.some.module"
        setup_logging("INFO")  # back to text
        stream.truncate(0)
        stream.seek(0)
        logging.getLogger("bot.some.module").info("plain")
        assert stream.getvalue().rstrip().endswith("bot.some.module: plain")
    finally:
        logging.captureWarnings(False)
        for handler in root.handlers[:]:
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)
