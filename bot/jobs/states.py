"""The job state machine: states, their order, and the pure decision of what an event does.

Provider statuses have a rank and a job only moves forward; terminal states are sticky.
Nothing here touches I/O: `decide` is called by the store inside the transaction that
applies its result, so the decision and the write can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.jobs.training_api import KNOWN_TRAINING_STATUSES


class JobState(StrEnum):
    PREVIEW = "preview"
    SUBMITTING = "submitting"
    UNCERTAIN = "uncertain"
    DEPLOYING_GPU = "deploying_gpu"
    TRAINING_STARTED = "training_started"
    TRAINING_SUCCESS = "training_success"
    TRAINED_MODEL_COMPRESSING = "trained_model_compressing"
    TRAINED_MODEL_UPLOADING = "trained_model_uploading"
    TRAINED_MODEL_UPLOADED = "trained_model_uploaded"
    DEPLOYING_MODEL = "deploying_model"
    MODEL_READY = "model_ready"
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def label(self) -> str:
        return STATE_LABELS[self]


#: The provider's documented progress, in order (the same 8 words on every page).
PROVIDER_PROGRESS: tuple[JobState, ...] = tuple(JobState(word) for word in KNOWN_TRAINING_STATUSES)

TERMINAL_STATES = frozenset({JobState.MODEL_READY, JobState.CANCELLED, JobState.FAILED, JobState.EXPIRED})
#: States in which a job counts against the owner's active-job limit.
ACTIVE_STATES = frozenset({JobState.SUBMITTING, JobState.UNCERTAIN, *PROVIDER_PROGRESS} - {JobState.MODEL_READY})

RANK: dict[JobState, int] = {
    JobState.PREVIEW: 0,
    JobState.SUBMITTING: 1,
    JobState.UNCERTAIN: 2,
    **{state: 10 + index for index, state in enumerate(PROVIDER_PROGRESS)},
    JobState.CANCELLED: 100,
    JobState.FAILED: 100,
    JobState.EXPIRED: 100,
}

STATE_LABELS: dict[JobState, str] = {
    JobState.PREVIEW: "Waiting for confirmation",
    JobState.SUBMITTING: "Submitting to the provider",
    JobState.UNCERTAIN: "Submission unconfirmed",
    JobState.DEPLOYING_GPU: "Deploying GPU",
    JobState.TRAINING_STARTED: "Training started",
    JobState.TRAINING_SUCCESS: "Training finished",
    JobState.TRAINED_MODEL_COMPRESSING: "Compressing the model",
    JobState.TRAINED_MODEL_UPLOADING: "Uploading the model",
    JobState.TRAINED_MODEL_UPLOADED: "Model uploaded",
    JobState.DEPLOYING_MODEL: "Deploying the model",
    JobState.MODEL_READY: "Model ready",
    JobState.CANCELLED: "Cancelled",
    JobState.FAILED: "Failed",
    JobState.EXPIRED: "Expired",
}

#: Words the provider (v3, v6 or its generic error payloads) uses for a failed run.
FAILURE_WORDS = frozenset({"failed", "failure", "error", "training_failed", "training_cancelled"})


class EventSource(StrEnum):
    WEBHOOK = "webhook"
    POLL = "poll"
    USER = "user"
    SYSTEM = "system"


class Action(StrEnum):
    """What an event asks for. Provider reports carry the provider's word in `status`."""

    PROVIDER_STATUS = "provider_status"  # a status word from a webhook or a poll
    SUBMIT = "submit"  # the owner pressed Start
    ACCEPTED = "accepted"  # the provider accepted the submission (carries training_id)
    UNCERTAIN = "uncertain"  # the submission may have reached the provider, no answer
    CANCEL = "cancel"  # the owner or a manager cancelled
    EXPIRE = "expire"  # the preview was dismissed or timed out
    FAIL = "fail"  # the provider rejected the job, or it stalled


@dataclass(frozen=True, slots=True)
class Event:
    action: Action
    source: EventSource
    status: str = ""  # the provider's word, or the target state's value for local actions
    detail: str | None = None  # a human reason (failure message, cancel reason)
    training_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of an event: a new state or none, and the word to record in the timeline."""

    new_state: JobState | None
    recorded_status: str
    reason: str  # why, for logs and tests: "advanced", "duplicate", "stale", "terminal", ...

    @property
    def changes_state(self) -> bool:
        return self.new_state is not None


def parse_provider_word(word: str) -> JobState | None:
    """Map a provider status word to a state; None for a word we do not know."""
    normalized = word.strip().lower()
    if normalized in FAILURE_WORDS:
        return JobState.FAILED
    try:
        state = JobState(normalized)
    except ValueError:
        return None
    return state if state in PROVIDER_PROGRESS else None


_LOCAL_TARGETS: dict[Action, JobState] = {
    Action.SUBMIT: JobState.SUBMITTING,
    Action.UNCERTAIN: JobState.UNCERTAIN,
    Action.CANCEL: JobState.CANCELLED,
    Action.EXPIRE: JobState.EXPIRED,
    Action.FAIL: JobState.FAILED,
}

#: Which states each local action may start from.
_ALLOWED_FROM: dict[Action, frozenset[JobState]] = {
    Action.SUBMIT: frozenset({JobState.PREVIEW}),
    Action.UNCERTAIN: frozenset({JobState.SUBMITTING}),
    Action.EXPIRE: frozenset({JobState.PREVIEW}),
    Action.CANCEL: frozenset(set(JobState) - TERMINAL_STATES),
    Action.FAIL: frozenset(set(JobState) - TERMINAL_STATES),
    Action.ACCEPTED: frozenset({JobState.SUBMITTING, JobState.UNCERTAIN}),
}


def decide(current: JobState, event: Event) -> Decision:
    """What `event` does to a job in state `current`. Pure and total: it never raises."""
    if event.action is Action.PROVIDER_STATUS or event.action is Action.ACCEPTED:
        word = event.status.strip().lower() or JobState.DEPLOYING_GPU.value
        if event.action is Action.ACCEPTED and current not in _ALLOWED_FROM[Action.ACCEPTED]:
            return Decision(None, word, "not submitting")
        target = parse_provider_word(word)
        if event.action is Action.ACCEPTED and (target is None or target is JobState.FAILED):
            # A success answer that carries a training id is an accepted training, whatever its
            # word: the word is recorded, and the job follows the provider from its first step.
            target = JobState.DEPLOYING_GPU
        if target is None:
            return Decision(None, word, "unknown status")
        if current.is_terminal:
            return Decision(None, word, "terminal")
        if current is JobState.PREVIEW:
            return Decision(None, word, "not submitted")
        if target is JobState.FAILED:
            return Decision(JobState.FAILED, word, "provider failure")
        if RANK[target] <= RANK[current]:
            return Decision(None, word, "duplicate" if target is current else "stale")
        return Decision(target, word, "advanced")

    target = _LOCAL_TARGETS[event.action]
    if current not in _ALLOWED_FROM[event.action]:
        return Decision(None, target.value, "terminal" if current.is_terminal else "not allowed")
    return Decision(target, target.value, "local")
