"""The domain's records: jobs, their events, outbox items and transition plans.

Plain data with no I/O. Every store adapter returns these and the services only ever see these,
so a second store (PostgreSQL beside SQLite) is one new adapter, not a change here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.jobs.states import Event, EventSource, JobState

#: What a job records when its owner cancelled it (anyone else is named: "Cancelled by ...").
CANCELLED_BY_OWNER = "Cancelled by its owner."


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


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    job_id: int
    status: str
    source: EventSource
    payload: str | None
    received_at: datetime
    applied: bool


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


class JobNotFound(LookupError):
    """No job has this id (never created, or erased with /forgetme)."""


class TrainingIdTaken(ValueError):
    """A report would give a job a training id that another job already has: nothing was written."""

    def __init__(self, job_id: int, training_id: str | None) -> None:
        super().__init__(f"job {job_id}: training id {training_id!r} belongs to another job")
        self.job_id = job_id
        self.training_id = training_id


#: Decides, inside the store's transaction, what an event does to the job as it is then.
Planner = Callable[[Job, Event], TransitionPlan]


@dataclass(frozen=True, slots=True)
class PreviewPhoto:
    """One prepared crop of a preview, as posted with the card once Start is pressed."""

    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Preview:
    """A preview waiting for Start, kept in the database so any process can start it."""

    job_id: int
    photos: tuple[PreviewPhoto, ...]
    card_in_dms: bool
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Posted:
    """A message the bot posted: where it is, and the links of its attachments."""

    channel_id: int
    message_id: int
    attachment_urls: tuple[str, ...] = ()


#: Who made a settings change, once that member was forgotten (/forgetme).
FORGOTTEN_MEMBER = 0


@dataclass(frozen=True, slots=True)
class GuildSettingChange:
    """One change of a server's setting: which, from what to what (None: the default), by whom."""

    guild_id: int
    key: str
    old: Any
    new: Any
    changed_by: int
    changed_at: datetime
