"""Turns a decision of the state machine into a plan the store applies atomically.

This is where "which notifications does a change cause" lives: the card is refreshed on every
change a user can see, and the owner is DMed on the outcomes that matter.
"""

from __future__ import annotations

from typing import Any

from bot.jobs.model import Job, OutboxDraft, TransitionPlan
from bot.jobs.states import Action, Event, JobState, decide

#: Outcomes the owner is told about directly.
DM_STATES = frozenset({JobState.MODEL_READY, JobState.FAILED, JobState.CANCELLED, JobState.UNCERTAIN})


def card_draft(job_id: int, reason: str) -> OutboxDraft:
    """Refresh the job's card. One key per job: bursts of changes coalesce into one edit."""
    return OutboxDraft("card", f"card:{job_id}", {"reason": reason}, coalesce=True)


def dm_draft(job_id: int, state: JobState) -> OutboxDraft:
    return OutboxDraft("dm", f"dm:{job_id}:{state.value}", {"state": state.value})


def plan_transition(job: Job, event: Event) -> TransitionPlan:
    """The plan for `event` on `job`: new state, column updates and outbox items."""
    decision = decide(job.state, event)
    if event.action is Action.PROVIDER_STATUS:
        # Decided here, inside the write transaction, so no concurrent webhook can slip past:
        # a report about another training, or about a finished job, is refused unwritten.
        if event.training_id and job.training_id and event.training_id != job.training_id:
            return TransitionPlan(None, decision.recorded_status, "model_id mismatch", write=False)
        if job.state.is_terminal:
            return TransitionPlan(None, decision.recorded_status, "terminal", write=False)
    updates: dict[str, Any] = {}
    provider_word = event.action in (Action.PROVIDER_STATUS, Action.ACCEPTED)

    adoptable = job.state in (JobState.SUBMITTING, JobState.UNCERTAIN) or decision.changes_state
    if event.training_id and not job.training_id and adoptable and not job.state.is_terminal:
        updates["training_id"] = event.training_id
    news = decision.changes_state or decision.reason == "unknown status"
    if provider_word and news and not job.state.is_terminal:
        updates["provider_status"] = decision.recorded_status
    if event.action is Action.SUBMIT and decision.changes_state:
        updates["submitted_at"] = None  # None: the store stamps the transaction time
    if decision.new_state in (JobState.FAILED, JobState.UNCERTAIN, JobState.CANCELLED) and event.detail:
        updates["last_error"] = event.detail[:1000]

    outbox: list[OutboxDraft] = []
    visible = job.state is not JobState.PREVIEW and not job.state.is_terminal
    has_card = job.card_message_id is not None  # no card yet (e.g. failed before posting): nothing to edit
    if visible and has_card and (decision.changes_state or "provider_status" in updates):
        outbox.append(card_draft(job.id, decision.recorded_status))
    if visible and decision.new_state in DM_STATES:
        outbox.append(dm_draft(job.id, decision.new_state))

    return TransitionPlan(
        new_state=decision.new_state,
        recorded_status=decision.recorded_status,
        reason=decision.reason,
        updates=updates,
        outbox=tuple(outbox),
    )
