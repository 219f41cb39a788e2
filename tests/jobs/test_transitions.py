"""plan_transition: which column updates and which outbox items (card, DM) a change causes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from bot.jobs.model import Job
from bot.jobs.states import PROVIDER_PROGRESS, TERMINAL_STATES, Action, Event, EventSource, JobState
from bot.jobs.transitions import DM_STATES, card_draft, dm_draft, plan_transition

S = JobState
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def job(state: JobState, *, training_id: str | None = None, job_id: int = 7) -> Job:
    return Job(
        id=job_id,
        owner_id=1,
        guild_id=2,
        channel_id=3,
        card_channel_id=3,
        card_message_id=4,
        name="n",
        state=state,
        provider_status=None,
        training_id=training_id,
        params={},
        image_count=5,
        image_urls=(),
        webhook_secret_hash=None,
        eta_text=None,
        last_error=None,
        created_at=NOW,
        updated_at=NOW,
        progressed_at=NOW,
        submitted_at=None,
        finished_at=None,
    )


def status(word: str, training_id: str | None = None, detail: str | None = None) -> Event:
    return Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status=word, training_id=training_id, detail=detail)


def kinds(plan) -> list[tuple[str, str]]:
    return [(draft.kind, draft.dedupe_key) for draft in plan.outbox]


def test_drafts() -> None:
    card = card_draft(7, "training_started")
    assert (card.kind, card.dedupe_key, dict(card.payload), card.coalesce) == (
        "card",
        "card:7",
        {"reason": "training_started"},
        True,
    )
    dm = dm_draft(7, S.MODEL_READY)
    assert (dm.kind, dm.dedupe_key, dict(dm.payload), dm.coalesce) == (
        "dm",
        "dm:7:model_ready",
        {"state": "model_ready"},
        False,
    )


def test_submit_stamps_submitted_at_and_sends_nothing_from_a_preview() -> None:
    plan = plan_transition(job(S.PREVIEW), Event(Action.SUBMIT, EventSource.USER))
    assert plan.new_state is S.SUBMITTING
    assert dict(plan.updates) == {"submitted_at": None}
    assert plan.outbox == ()


def test_expiring_a_preview_sends_nothing() -> None:
    plan = plan_transition(job(S.PREVIEW), Event(Action.EXPIRE, EventSource.USER, detail="timed out"))
    assert plan.new_state is S.EXPIRED
    assert plan.outbox == ()
    assert "last_error" not in plan.updates


def test_accepted_adopts_the_training_id_and_refreshes_the_card() -> None:
    event = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id="F5jvdzGnYi")
    plan = plan_transition(job(S.SUBMITTING), event)
    assert plan.new_state is S.DEPLOYING_GPU
    assert dict(plan.updates) == {"training_id": "F5jvdzGnYi", "provider_status": "deploying_gpu"}
    assert kinds(plan) == [("card", "card:7")]


def test_progress_refreshes_the_card_only() -> None:
    plan = plan_transition(job(S.DEPLOYING_GPU, training_id="T"), status("training_started", "T"))
    assert plan.new_state is S.TRAINING_STARTED
    assert dict(plan.updates) == {"provider_status": "training_started"}  # an id is never replaced
    assert kinds(plan) == [("card", "card:7")]


def test_model_ready_refreshes_the_card_and_dms_the_owner() -> None:
    plan = plan_transition(job(S.DEPLOYING_MODEL, training_id="T"), status("model_ready", "T"))
    assert plan.new_state is S.MODEL_READY
    assert kinds(plan) == [("card", "card:7"), ("dm", "dm:7:model_ready")]


def test_provider_failure_keeps_the_detail() -> None:
    plan = plan_transition(job(S.TRAINING_STARTED, training_id="T"), status("failed", "T", detail="x" * 2000))
    assert plan.new_state is S.FAILED
    assert plan.updates["last_error"] == "x" * 1000
    assert plan.updates["provider_status"] == "failed"
    assert kinds(plan) == [("card", "card:7"), ("dm", "dm:7:failed")]


@pytest.mark.parametrize(
    ("start", "action", "target"),
    [
        (S.SUBMITTING, Action.UNCERTAIN, S.UNCERTAIN),
        (S.TRAINING_STARTED, Action.CANCEL, S.CANCELLED),
        (S.DEPLOYING_GPU, Action.FAIL, S.FAILED),
    ],
)
def test_local_outcomes_dm_the_owner_with_the_reason(start: JobState, action: Action, target: JobState) -> None:
    plan = plan_transition(job(start, training_id="T"), Event(action, EventSource.SYSTEM, detail="reason"))
    assert plan.new_state is target
    assert plan.updates == {"last_error": "reason"}
    assert kinds(plan) == [("card", "card:7"), ("dm", f"dm:7:{target.value}")]


def test_duplicates_and_stale_events_cause_nothing() -> None:
    for current, word in ((S.TRAINING_STARTED, "training_started"), (S.TRAINING_SUCCESS, "deploying_gpu")):
        plan = plan_transition(job(current, training_id="T"), status(word, "T"))
        assert plan.new_state is None
        assert plan.updates == {}
        assert plan.outbox == ()


def test_an_unknown_word_is_shown_without_a_state_change() -> None:
    plan = plan_transition(job(S.TRAINING_STARTED, training_id="T"), status("queued_again", "T"))
    assert plan.new_state is None
    assert plan.reason == "unknown status"
    assert dict(plan.updates) == {"provider_status": "queued_again"}
    assert kinds(plan) == [("card", "card:7")]


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_jobs_get_no_updates_and_no_notifications(terminal: JobState) -> None:
    events = [status(w, "NEW") for w in ("model_ready", "failed", "queued", "training_started")]
    events += [Event(a, EventSource.USER, detail="d", training_id="NEW") for a in (Action.CANCEL, Action.FAIL)]
    for event in events:
        plan = plan_transition(job(terminal), event)
        assert plan.new_state is None
        assert plan.updates == {}
        assert plan.outbox == ()


def test_an_uncertain_job_adopts_the_id_of_a_late_webhook() -> None:
    plan = plan_transition(job(S.UNCERTAIN), status("training_started", "LATE123"))
    assert plan.new_state is S.TRAINING_STARTED
    assert plan.updates["training_id"] == "LATE123"
    # Even a word that does not move it still lets the uncertain job learn its id.
    plan = plan_transition(job(S.UNCERTAIN), status("queued", "LATE123"))
    assert plan.updates["training_id"] == "LATE123"


def test_a_stale_event_never_sets_a_training_id() -> None:
    plan = plan_transition(job(S.TRAINING_SUCCESS), status("deploying_gpu", "SOMEONE"))
    assert "training_id" not in plan.updates


def test_exactly_one_dm_per_outcome_along_the_whole_path() -> None:
    current = job(S.SUBMITTING)
    dms: list[str] = []
    for state in PROVIDER_PROGRESS:
        plan = plan_transition(current, status(state.value, "T"))
        dms += [draft.dedupe_key for draft in plan.outbox if draft.kind == "dm"]
        current = dataclasses.replace(current, state=plan.new_state or current.state)
    assert dms == ["dm:7:model_ready"]
    assert {S.MODEL_READY, S.FAILED, S.CANCELLED, S.UNCERTAIN} == DM_STATES
