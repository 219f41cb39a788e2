"""Typed rows returned by the store. Plain data: no I/O, no behaviour beyond parsing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiosqlite

from bot.jobs.states import EventSource, JobState


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    owner_id: int
    guild_id: int | None
    channel_id: int
    card_channel_id: int | None
    card_message_id: int | None
    name: str
    state: JobState
    provider_status: str | None
    training_id: str | None
    params: Mapping[str, Any]
    image_count: int
    image_urls: tuple[str, ...]
    webhook_secret_hash: str | None
    eta_text: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    progressed_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    #: The provider listing taken just before submission (settles an unconfirmed submission).
    baseline_listing: int | None = None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Job:
        return cls(
            id=row["id"],
            owner_id=row["owner_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            card_channel_id=row["card_channel_id"],
            card_message_id=row["card_message_id"],
            name=row["name"],
            state=JobState(row["state"]),
            provider_status=row["provider_status"],
            training_id=row["training_id"],
            params=json.loads(row["params"]),
            image_count=row["image_count"],
            image_urls=tuple(json.loads(row["image_urls"] or "[]")),
            webhook_secret_hash=row["webhook_secret_hash"],
            eta_text=row["eta_text"],
            last_error=row["last_error"],
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            progressed_at=datetime.fromisoformat(row["progressed_at"]),
            submitted_at=parse_time(row["submitted_at"]),
            finished_at=parse_time(row["finished_at"]),
            baseline_listing=row["baseline_listing"],
        )


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    job_id: int
    status: str
    source: EventSource
    payload: str | None
    received_at: datetime
    applied: bool

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> JobEvent:
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            status=row["status"],
            source=EventSource(row["source"]),
            payload=row["payload"],
            received_at=datetime.fromisoformat(row["received_at"]),
            applied=bool(row["applied"]),
        )


@dataclass(frozen=True, slots=True)
class OutboxDraft:
    """A notification to write in the same transaction as a state change."""

    kind: str  # "card" or "dm"
    dedupe_key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    #: A card refresh is coalesced: re-arming an undelivered or delivered card item is fine.
    coalesce: bool = False


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    job_id: int | None
    kind: str
    dedupe_key: str
    payload: Mapping[str, Any]
    attempts: int
    next_attempt_at: datetime

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> OutboxItem:
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            kind=row["kind"],
            dedupe_key=row["dedupe_key"],
            payload=json.loads(row["payload"]),
            attempts=row["attempts"],
            next_attempt_at=datetime.fromisoformat(row["next_attempt_at"]),
        )


@dataclass(frozen=True, slots=True)
class TransitionPlan:
    """What the domain decided an event does; the store applies it in one transaction."""

    new_state: JobState | None
    recorded_status: str
    reason: str
    #: Column updates besides the state (e.g. training_id, last_error, provider_status).
    updates: Mapping[str, Any] = field(default_factory=dict)
    outbox: tuple[OutboxDraft, ...] = ()
    #: False: the event is refused outright and nothing at all is written (e.g. a webhook for a
    #: job that finished while the webhook was on its way).
    write: bool = True


@dataclass(frozen=True, slots=True)
class TransitionResult:
    before: Job
    after: Job
    plan: TransitionPlan
    event_recorded: bool  # False when this status had already been recorded for the job

    @property
    def changed(self) -> bool:
        return self.plan.new_state is not None
