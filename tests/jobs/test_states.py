"""The pure state machine: forward-only by rank, sticky terminal states, local actions from their states."""

from __future__ import annotations

import itertools

import pytest

from bot.jobs.states import (
    ACTIVE_STATES,
    FAILURE_WORDS,
    PROVIDER_PROGRESS,
    RANK,
    STATE_LABELS,
    TERMINAL_STATES,
    Action,
    Event,
    EventSource,
    JobState,
    decide,
    parse_provider_word,
)

S = JobState
PROGRESS_WORDS = [state.value for state in PROVIDER_PROGRESS]
LOCAL_ACTIONS = (Action.SUBMIT, Action.UNCERTAIN, Action.CANCEL, Action.EXPIRE, Action.FAIL)


def word(status: str, source: EventSource = EventSource.WEBHOOK) -> Event:
    return Event(Action.PROVIDER_STATUS, source, status=status)


def local(action: Action) -> Event:
    return Event(action, EventSource.USER)


def test_the_documented_order_and_sets() -> None:
    assert PROGRESS_WORDS == [
        "deploying_gpu",
        "training_started",
        "training_success",
        "trained_model_compressing",
        "trained_model_uploading",
        "trained_model_uploaded",
        "deploying_model",
        "model_ready",
    ]
    ranks = [RANK[state] for state in (S.PREVIEW, S.SUBMITTING, S.UNCERTAIN, *PROVIDER_PROGRESS)]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert all(RANK[state] > RANK[S.MODEL_READY] for state in TERMINAL_STATES - {S.MODEL_READY})
    assert set(RANK) == set(JobState) == set(STATE_LABELS)
    assert {S.MODEL_READY, S.CANCELLED, S.FAILED, S.EXPIRED} == TERMINAL_STATES
    assert {S.SUBMITTING, S.UNCERTAIN, *PROVIDER_PROGRESS} - {S.MODEL_READY} == ACTIVE_STATES
    assert all(state.is_terminal == (state in TERMINAL_STATES) for state in JobState)
    assert S.TRAINING_SUCCESS.label == "Training finished"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deploying_gpu", S.DEPLOYING_GPU),
        ("  Model_Ready ", S.MODEL_READY),
        ("failed", S.FAILED),
        ("ERROR", S.FAILED),
        ("training_cancelled", S.FAILED),  # v6: "cancelled" means the run failed
        ("preview", None),  # our own states are not provider words
        ("cancelled", None),
        ("expired", None),
        ("uncertain", None),
        ("queued", None),
        ("", None),
    ],
)
def test_parse_provider_word(text: str, expected: JobState | None) -> None:
    assert parse_provider_word(text) is expected


def test_a_job_walks_forward_through_every_provider_status() -> None:
    state = S.SUBMITTING
    for status in PROGRESS_WORDS:
        decision = decide(state, word(status))
        assert decision.new_state is S(status)
        assert decision.reason == "advanced"
        assert decision.recorded_status == status
        state = decision.new_state
    assert state is S.MODEL_READY


def test_skipping_ahead_is_allowed() -> None:
    assert decide(S.DEPLOYING_GPU, word("trained_model_uploaded")).new_state is S.TRAINED_MODEL_UPLOADED
    assert decide(S.SUBMITTING, word("model_ready")).new_state is S.MODEL_READY
    assert decide(S.UNCERTAIN, word("training_started")).new_state is S.TRAINING_STARTED


def test_duplicates_and_stale_words_are_ignored() -> None:
    duplicate = decide(S.TRAINING_STARTED, word("training_started"))
    assert (duplicate.new_state, duplicate.reason, duplicate.changes_state) == (None, "duplicate", False)
    stale = decide(S.TRAINING_SUCCESS, word("deploying_gpu"))
    assert (stale.new_state, stale.reason, stale.recorded_status) == (None, "stale", "deploying_gpu")


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_are_sticky_for_every_event(terminal: JobState) -> None:
    events = [word(w) for w in [*PROGRESS_WORDS, *FAILURE_WORDS]]
    events += [local(action) for action in LOCAL_ACTIONS]
    events += [Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id="T")]
    for event in events:
        decision = decide(terminal, event)
        assert decision.new_state is None, event
        assert decision.reason in {"terminal", "not submitting"}, (event, decision)


def test_unknown_provider_words_are_recorded_without_a_change() -> None:
    for state in JobState:
        decision = decide(state, word("Queued_For_GPU"))
        assert decision.new_state is None
        assert decision.recorded_status == "queued_for_gpu"
        assert decision.reason == "unknown status"


@pytest.mark.parametrize("failure", sorted(FAILURE_WORDS))
def test_failure_words_fail_a_running_job(failure: str) -> None:
    for state in (S.SUBMITTING, S.UNCERTAIN, *PROVIDER_PROGRESS[:-1]):
        decision = decide(state, word(failure.upper()))
        assert decision.new_state is S.FAILED
        assert decision.recorded_status == failure
        assert decision.reason == "provider failure"


def test_provider_words_do_not_touch_a_preview() -> None:
    for status in [*PROGRESS_WORDS, "failed"]:
        decision = decide(S.PREVIEW, word(status))
        assert (decision.new_state, decision.reason) == (None, "not submitted")


def test_accepted_only_from_submitting_or_uncertain() -> None:
    event = Event(Action.ACCEPTED, EventSource.SYSTEM, status="", training_id="T")
    assert decide(S.SUBMITTING, event).new_state is S.DEPLOYING_GPU  # no word: deploying_gpu
    assert decide(S.UNCERTAIN, event).new_state is S.DEPLOYING_GPU
    for state in set(JobState) - {S.SUBMITTING, S.UNCERTAIN}:
        decision = decide(state, event)
        assert (decision.new_state, decision.reason) == (None, "not submitting"), state


def test_accepted_with_any_word_is_an_accepted_training() -> None:
    for status in ("queued_for_gpu", "processing", "failed", "training_started"):
        event = Event(Action.ACCEPTED, EventSource.SYSTEM, status=status, training_id="T")
        decision = decide(S.SUBMITTING, event)
        expected = S.TRAINING_STARTED if status == "training_started" else S.DEPLOYING_GPU
        assert (decision.new_state, decision.recorded_status) == (expected, status)


ALLOWED = {
    Action.SUBMIT: ({S.PREVIEW}, S.SUBMITTING),
    Action.UNCERTAIN: ({S.SUBMITTING}, S.UNCERTAIN),
    Action.EXPIRE: ({S.PREVIEW}, S.EXPIRED),
    Action.CANCEL: (set(JobState) - TERMINAL_STATES, S.CANCELLED),
    Action.FAIL: (set(JobState) - TERMINAL_STATES, S.FAILED),
}


@pytest.mark.parametrize("action", LOCAL_ACTIONS)
def test_local_actions_only_from_their_states(action: Action) -> None:
    allowed, target = ALLOWED[action]
    for state in JobState:
        decision = decide(state, local(action))
        assert decision.recorded_status == target.value
        if state in allowed:
            assert (decision.new_state, decision.reason) == (target, "local"), state
        else:
            assert decision.new_state is None, state
            assert decision.reason == ("terminal" if state.is_terminal else "not allowed")


STATUSES = [*PROGRESS_WORDS, *FAILURE_WORDS, *(s.value for s in JobState), "", "  ", "queued", "Model_Ready", "💥"]
EVENTS = [
    Event(action, source, status=status, detail=detail, training_id=training_id)
    for action, source, status, detail, training_id in itertools.product(
        Action, EventSource, STATUSES, (None, "why"), (None, "TID")
    )
]


def test_exhaustive_decide_never_raises_never_leaves_terminal_never_moves_back() -> None:
    assert len(EVENTS) > 3000
    for state, event in itertools.product(JobState, EVENTS):
        decision = decide(state, event)  # must not raise
        assert decision.recorded_status  # something is always recorded
        if state.is_terminal:
            assert decision.new_state is None, (state, event)
        elif decision.new_state is not None:
            assert RANK[decision.new_state] > RANK[state], (state, event, decision)
            assert decision.new_state is not state
        assert decision.changes_state == (decision.new_state is not None)


def test_decide_is_pure() -> None:
    event = word("training_started")
    assert decide(S.DEPLOYING_GPU, event) == decide(S.DEPLOYING_GPU, event)
    assert event == word("training_started")
