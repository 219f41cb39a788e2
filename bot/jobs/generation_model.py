"""The domain's records for generations (pictures made with a trained LoRA).

Plain data with no I/O, like `bot.jobs.model`: the generation stores return these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.jobs.model import OutboxDraft


class GenerationState(StrEnum):
    QUEUED = "queued"  # written; waits for a place in the provider's queue (or its retry time)
    SUBMITTING = "submitting"  # the text2img call may be under way
    PROCESSING = "processing"  # the provider took it; fetched until it is done
    READY = "ready"  # the pictures are downloaded and stored; the result is in the outbox
    FAILED = "failed"
    UNCERTAIN = "uncertain"  # the submission may have reached the provider: never resent

    @property
    def is_terminal(self) -> bool:
        return self in (GenerationState.READY, GenerationState.FAILED, GenerationState.UNCERTAIN)


class GenerationNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Generation:
    id: int
    job_id: int
    owner_id: int
    guild_id: int | None
    channel_id: int | None
    kind: str
    state: GenerationState
    user_prompt: str
    prompt: str
    negative_prompt: str | None
    strength: float
    samples: int
    seed: int
    width: int
    height: int
    base_model_id: str
    lora_model: str
    safety_checker: bool
    age_restricted: bool
    request_id: str | None
    attempts: int
    last_error: str | None
    reply_to_message_id: int | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    next_check_at: datetime


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """Everything a generation is created with (the settings Again reuses)."""

    job_id: int
    owner_id: int
    guild_id: int | None
    channel_id: int | None
    kind: str
    user_prompt: str
    prompt: str
    negative_prompt: str | None
    strength: float
    samples: int
    seed: int
    width: int
    height: int
    base_model_id: str
    lora_model: str
    safety_checker: bool
    age_restricted: bool


@dataclass(frozen=True, slots=True)
class Picture:
    """A downloaded picture, before it is posted."""

    data: bytes
    content_type: str
    nsfw: bool


@dataclass(frozen=True, slots=True)
class StoredPicture:
    position: int
    data: bytes | None
    content_type: str
    nsfw: bool
    url: str | None


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """What the domain decided a generation event does; applied in one transaction."""

    new_state: GenerationState | None
    reason: str
    updates: Mapping[str, Any] = field(default_factory=dict)
    outbox: tuple[OutboxDraft, ...] = ()
    pictures: tuple[Picture, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationChange:
    before: Generation
    after: Generation
    plan: GenerationPlan

    @property
    def changed(self) -> bool:
        return self.plan.new_state is not None


GenerationPlanner = Callable[[Generation], GenerationPlan]


def result_draft(generation_id: int) -> OutboxDraft:
    """Post a generation's result (its pictures, or why there are none). Once per generation."""
    return OutboxDraft("generation", f"generation:{generation_id}", {"generation": generation_id})
