"""PostgreSQL rows (asyncpg records) to the domain's records.

asyncpg already returns timezone-aware UTC datetimes for timestamptz, Python values for jsonb
(see the codec in `pg_database`) and bools for booleans, so only the enums and a few shapes differ.
"""

from __future__ import annotations

from asyncpg import Record

from bot.jobs.generation_model import Generation, GenerationState
from bot.jobs.model import Job, JobEvent, OutboxItem
from bot.jobs.states import EventSource, JobState
from bot.store.records import Decoder, build

_JOB: dict[str, Decoder] = {"state": JobState, "image_urls": lambda value: tuple(value or ())}
_EVENT: dict[str, Decoder] = {"source": EventSource}
_GENERATION: dict[str, Decoder] = {"state": GenerationState, "strength": float}


def job_from_record(row: Record) -> Job:
    return build(Job, row, _JOB)


def job_event_from_record(row: Record) -> JobEvent:
    return build(JobEvent, row, _EVENT)


def outbox_item_from_record(row: Record) -> OutboxItem:
    return build(OutboxItem, row, {})


def generation_from_record(row: Record) -> Generation:
    return build(Generation, row, _GENERATION)
