"""SQLite rows to the domain's records (timestamps are ISO text, JSON columns are text)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from bot.jobs.generation_model import Generation, GenerationState
from bot.jobs.model import Job, JobEvent, OutboxItem
from bot.jobs.states import EventSource, JobState
from bot.store.records import Decoder, build

Row = sqlite3.Row


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


_TIME = datetime.fromisoformat
_JOB: dict[str, Decoder] = {
    "state": JobState,
    "params": json.loads,
    "image_urls": lambda value: tuple(json.loads(value or "[]")),
    "created_at": _TIME,
    "updated_at": _TIME,
    "progressed_at": _TIME,
    "submitted_at": parse_time,
    "finished_at": parse_time,
}
_EVENT: dict[str, Decoder] = {"source": EventSource, "received_at": _TIME, "applied": bool}
_OUTBOX: dict[str, Decoder] = {"payload": json.loads, "next_attempt_at": _TIME}
_GENERATION: dict[str, Decoder] = {
    "state": GenerationState,
    "strength": float,
    "safety_checker": bool,
    "age_restricted": bool,
    "created_at": _TIME,
    "updated_at": _TIME,
    "submitted_at": parse_time,
    "finished_at": parse_time,
    "next_check_at": _TIME,
}


def job_from_row(row: Row) -> Job:
    return build(Job, row, _JOB)


def job_event_from_row(row: Row) -> JobEvent:
    return build(JobEvent, row, _EVENT)


def outbox_item_from_row(row: Row) -> OutboxItem:
    return build(OutboxItem, row, _OUTBOX)


def generation_from_row(row: Row) -> Generation:
    return build(Generation, row, _GENERATION)
