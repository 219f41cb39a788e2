"""SqliteStore: jobs, events, the outbox and its coalescing, users, key/value, forgetting a user, index use."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.jobs.model import Job, JobNotFound, OutboxDraft, TransitionPlan
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import card_draft, plan_transition
from bot.store import Database
from bot.store.sqlite import SqliteStore
from tests.store_helpers import due_outbox, enqueue, job_by_training_id, pending_outbox_count

SUBMIT = Event(Action.SUBMIT, EventSource.USER)


def accepted(training_id: str) -> Event:
    return Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)


def webhook(word: str) -> Event:
    return Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status=word)


async def new_job(store: SqliteStore, owner: int = 1, *, guild: int | None = 10, name: str = "portrait") -> Job:
    return await store.create_job(
        owner_id=owner, guild_id=guild, channel_id=100, name=name, params={"instance_prompt": "p"}, image_count=6
    )


async def submitted_job(store: SqliteStore, owner: int = 1, *, guild: int | None = 10, name: str = "portrait") -> Job:
    job = await new_job(store, owner, guild=guild, name=name)
    await store.apply_event(job.id, SUBMIT, plan_transition)
    await store.set_card(job.id, job.channel_id, 9000 + job.id)  # the Start flow posts the card next
    return await store.require_job(job.id)


async def count(db: Database, table: str) -> int:
    return int((await db.fetchone(f"SELECT COUNT(*) FROM {table}"))[0])


async def row_counts(db: Database) -> dict[str, int]:
    return {table: await count(db, table) for table in ("jobs", "job_events", "outbox", "users", "kv")}


# -- jobs -------------------------------------------------------------------------------------


async def test_create_and_get_a_job(store: SqliteStore, clock) -> None:
    job = await store.create_job(
        owner_id=7,
        guild_id=None,
        channel_id=99,
        name="my dog",
        params={"seed": 3, "instance_prompt": "photo of sks dog"},
        image_count=8,
    )
    assert job.state is JobState.PREVIEW
    assert (job.owner_id, job.guild_id, job.channel_id, job.name, job.image_count) == (7, None, 99, "my dog", 8)
    assert dict(job.params) == {"seed": 3, "instance_prompt": "photo of sks dog"}
    assert job.created_at == job.updated_at == job.progressed_at == clock()
    assert job.training_id is None and job.submitted_at is None and job.finished_at is None
    assert job.image_urls == ()
    assert await store.get_job(job.id) == job
    assert await store.require_job(job.id) == job
    assert await store.get_job(job.id + 1) is None
    with pytest.raises(JobNotFound):
        await store.require_job(job.id + 1)


async def test_negative_image_count_is_refused_by_the_schema(store: SqliteStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await store.create_job(owner_id=1, guild_id=None, channel_id=1, name="x", params={}, image_count=-1)
    assert await count(store.db, "jobs") == 0


async def test_timestamps_are_timezone_aware_utc(db: Database) -> None:
    plus_five = timezone(timedelta(hours=5))
    moment = datetime(2030, 6, 1, 17, 30, tzinfo=plus_five)
    store = SqliteStore(db, now=lambda: moment)
    job = await submitted_job(store)
    for value in (job.created_at, job.updated_at, job.progressed_at, job.submitted_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
        assert value == moment
    row = await db.fetchone("SELECT created_at, updated_at, progressed_at, submitted_at FROM jobs")
    assert all(text.endswith("+00:00") and text.startswith("2030-06-01T12:30:00") for text in row)
    naive = SqliteStore(db, now=lambda: datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await new_job(naive)


async def test_job_card_submission_data_and_touch(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    await store.set_card(job.id, 555, 666)
    clock.advance(10)
    await store.prepare_submission(job.id, image_urls=["https://cdn/1.png", "https://cdn/2.png"], secret_hash="ab" * 32)
    job = await store.require_job(job.id)
    assert (job.card_channel_id, job.card_message_id) == (555, 666)
    assert job.image_urls == ("https://cdn/1.png", "https://cdn/2.png")
    assert job.webhook_secret_hash == "ab" * 32
    assert job.updated_at == clock()
    clock.advance(5)
    await store.touch(job.id, eta_text="10 minutes")
    await store.touch(job.id)  # None keeps the known ETA
    job = await store.require_job(job.id)
    assert job.webhook_secret_hash == "ab" * 32  # a touch leaves the secret alone
    assert job.eta_text == "10 minutes"
    assert job.updated_at == clock()
    assert job.progressed_at < clock()  # a touch is not progress


async def test_get_job_by_training_id(store: SqliteStore) -> None:
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("F5jvdzGnYi"), plan_transition)
    assert (await job_by_training_id(store, "F5jvdzGnYi")).id == job.id
    assert await job_by_training_id(store, "other") is None


async def test_jobs_for_owner_newest_first_paged_without_previews_or_other_users(store: SqliteStore) -> None:
    mine = [await submitted_job(store, owner=1, name=f"mine {i}") for i in range(5)]
    await submitted_job(store, owner=2, name="theirs")
    await new_job(store, owner=1, name="still a preview")
    ids = [job.id for job in reversed(mine)]

    assert [j.id for j in await store.jobs_for_owner(1, limit=10)] == ids
    assert [j.id for j in await store.jobs_for_owner(1, limit=2)] == ids[:2]
    assert [j.id for j in await store.jobs_for_owner(1, limit=2, offset=2)] == ids[2:4]
    assert [j.id for j in await store.jobs_for_owner(1, limit=2, offset=4)] == ids[4:]
    assert await store.jobs_for_owner(1, limit=2, offset=6) == []
    assert await store.count_jobs_for_owner(1) == 5
    assert [j.name for j in await store.jobs_for_owner(2, limit=10)] == ["theirs"]
    assert await store.jobs_for_owner(3, limit=10) == []


async def test_search_owner_jobs(store: SqliteStore) -> None:
    cat = await submitted_job(store, name="Cat portraits")
    sale = await submitted_job(store, name="50% off_sale")
    dog = await submitted_job(store, name="dog")
    await store.apply_event(dog.id, accepted("TRAIN123xyz"), plan_transition)
    await submitted_job(store, owner=2, name="Cat of someone else")
    await new_job(store, name="Cat preview")

    async def found(text: str) -> list[int]:
        return [job.id for job in await store.search_owner_jobs(1, text)]

    assert await found("") == [dog.id, sale.id, cat.id]
    assert await found("cat") == [cat.id]  # case-insensitive, not another user's, not a preview
    assert await found("%") == [sale.id]  # a literal percent sign, not a wildcard
    assert await found("_") == [sale.id]  # a literal underscore
    assert await found("123xy") == [dog.id]  # by training id
    assert sale.id in await found(str(sale.id))  # by job id
    assert cat.id not in await found(str(sale.id))
    assert await found("nothing") == []
    assert len(await store.search_owner_jobs(1, "", limit=2)) == 2


async def test_count_active_jobs(store: SqliteStore) -> None:
    await new_job(store)  # preview: not active
    submitting = await submitted_job(store)
    uncertain = await submitted_job(store)
    await store.apply_event(uncertain.id, Event(Action.UNCERTAIN, EventSource.SYSTEM), plan_transition)
    training = await submitted_job(store)
    await store.apply_event(training.id, accepted("T1"), plan_transition)
    done = await submitted_job(store)
    await store.apply_event(done.id, Event(Action.FAIL, EventSource.SYSTEM), plan_transition)
    await submitted_job(store, owner=2)
    assert await store.count_active_jobs(1) == 3
    await store.apply_event(submitting.id, Event(Action.CANCEL, EventSource.USER), plan_transition)
    assert await store.count_active_jobs(1) == 2
    assert await store.count_active_jobs(2) == 1


async def test_submissions_since(store: SqliteStore, clock) -> None:
    start = clock()
    first = await submitted_job(store, owner=1, guild=10)
    clock.advance(hours=1)
    await submitted_job(store, owner=2, guild=10)
    clock.advance(hours=1)
    await submitted_job(store, owner=1, guild=20)
    await new_job(store, owner=1, guild=10)  # never submitted

    assert await store.submissions_since(start, owner_id=1) == [start, start + timedelta(hours=2)]
    assert await store.submissions_since(start + timedelta(minutes=1), owner_id=1) == [start + timedelta(hours=2)]
    assert await store.submissions_since(start, guild_id=10) == [start, start + timedelta(hours=1)]
    assert await store.submissions_since(start, guild_id=30) == []
    assert first.submitted_at == start
    with pytest.raises(ValueError, match="exactly one"):
        await store.submissions_since(start, owner_id=1, guild_id=10)
    with pytest.raises(ValueError, match="exactly one"):
        await store.submissions_since(start)


async def test_overdue_jobs_only_non_terminal_older_than_the_cutoff(store: SqliteStore, clock) -> None:
    old_preview = await new_job(store)
    old_training = await submitted_job(store)
    await store.apply_event(old_training.id, accepted("T-old"), plan_transition)
    old_failed = await submitted_job(store)
    await store.apply_event(old_failed.id, Event(Action.FAIL, EventSource.SYSTEM), plan_transition)
    old_ready = await submitted_job(store)
    await store.apply_event(old_ready.id, accepted("T-ready"), plan_transition)
    await store.apply_event(old_ready.id, webhook("model_ready"), plan_transition)
    clock.advance(minutes=10)
    cutoff = clock()
    await store.touch(old_preview.id)  # touched at the cutoff: not older than it
    recent = await submitted_job(store)

    overdue = await store.overdue_jobs(cutoff)
    assert [job.id for job in overdue] == [old_training.id]
    later = await store.overdue_jobs(cutoff + timedelta(seconds=1))
    assert [job.id for job in later] == [old_training.id, old_preview.id, recent.id]  # oldest update first
    assert len(await store.overdue_jobs(cutoff + timedelta(seconds=1), limit=2)) == 2
    # A cutoff in another time zone means the same instant.
    other_zone = (cutoff + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-7)))
    assert [job.id for job in await store.overdue_jobs(other_zone)] == [job.id for job in later]


async def test_job_ids_in_states(store: SqliteStore) -> None:
    preview = await new_job(store)
    submitting = await submitted_job(store)
    assert await store.job_ids_in_states([JobState.PREVIEW]) == [preview.id]
    assert await store.job_ids_in_states([JobState.SUBMITTING, JobState.PREVIEW]) == [preview.id, submitting.id]
    assert await store.job_ids_in_states([JobState.FAILED]) == []


# -- the one state-change path -------------------------------------------------------------------


async def test_apply_event_writes_state_event_and_outbox_together(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    clock.advance(30)
    result = await store.apply_event(job.id, accepted("TID1"), plan_transition, payload='{"raw": true}')
    assert result.before.state is JobState.SUBMITTING
    assert result.after.state is JobState.DEPLOYING_GPU
    assert result.after.training_id == "TID1"
    assert result.after.provider_status == "deploying_gpu"
    assert result.after.progressed_at == clock() == result.after.updated_at
    assert result.event_recorded and result.changed
    events = await store.events_for_job(job.id)
    assert [(e.status, e.source, e.applied, e.payload) for e in events] == [
        ("submitting", EventSource.USER, True, None),
        ("deploying_gpu", EventSource.SYSTEM, True, '{"raw": true}'),
    ]
    assert events[1].received_at == clock()
    due = await due_outbox(store)
    assert [(item.kind, item.dedupe_key, dict(item.payload)) for item in due] == [
        ("card", f"card:{job.id}", {"reason": "deploying_gpu"})
    ]


async def test_a_duplicate_status_is_recorded_once(store: SqliteStore) -> None:
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("T"), plan_transition)
    first = await store.apply_event(job.id, webhook("training_started"), plan_transition)
    again = await store.apply_event(job.id, webhook("training_started"), plan_transition)
    assert first.event_recorded and first.changed
    assert not again.event_recorded and not again.changed
    assert [e.status for e in await store.events_for_job(job.id)] == ["submitting", "deploying_gpu", "training_started"]


async def test_terminal_state_sets_finished_at(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    clock.advance(60)
    result = await store.apply_event(job.id, Event(Action.FAIL, EventSource.SYSTEM, detail="boom"), plan_transition)
    assert result.after.state is JobState.FAILED
    assert result.after.finished_at == clock()
    assert result.after.last_error == "boom"


async def test_apply_event_for_a_missing_job(store: SqliteStore) -> None:
    with pytest.raises(JobNotFound):
        await store.apply_event(404, SUBMIT, plan_transition)
    assert await count(store.db, "job_events") == 0


async def test_a_crash_inside_apply_event_writes_nothing(store: SqliteStore) -> None:
    job = await submitted_job(store)
    before = await row_counts(store.db)

    def explodes(current: Job, event: Event) -> TransitionPlan:
        raise RuntimeError("planner crashed")

    def bad_outbox(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        # The state update and event insert run first; this insert violates the kind CHECK.
        return TransitionPlan(
            plan.new_state, plan.recorded_status, plan.reason, plan.updates, (*plan.outbox, OutboxDraft("sms", "x"))
        )

    def bad_column(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        return TransitionPlan(plan.new_state, plan.recorded_status, plan.reason, {"owner_id": 2})

    with pytest.raises(RuntimeError):
        await store.apply_event(job.id, accepted("T"), explodes)
    with pytest.raises(sqlite3.IntegrityError):
        await store.apply_event(job.id, accepted("T"), bad_outbox)
    with pytest.raises(ValueError, match="owner_id"):
        await store.apply_event(job.id, accepted("T"), bad_column)

    assert await row_counts(store.db) == before
    assert await store.require_job(job.id) == job
    assert await pending_outbox_count(store) == 0


# -- outbox -----------------------------------------------------------------------------------


async def test_a_dm_is_enqueued_once_per_key(store: SqliteStore) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", f"dm:{job.id}:model_ready", {"n": 1}))
    await enqueue(store, job.id, OutboxDraft("dm", f"dm:{job.id}:model_ready", {"n": 2}))
    due = await due_outbox(store)
    assert [dict(item.payload) for item in due] == [{"n": 1}]
    await store.mark_delivered(due[0])
    await enqueue(store, job.id, OutboxDraft("dm", f"dm:{job.id}:model_ready", {"n": 3}))
    assert await pending_outbox_count(store) == 0  # a delivered DM is never sent again


async def test_an_outbox_item_without_a_job(store: SqliteStore) -> None:
    await enqueue(store, None, OutboxDraft("dm", "dm:user:5:hello", {"user": 5}))
    (item,) = await due_outbox(store)
    assert item.job_id is None
    assert dict(item.payload) == {"user": 5}


async def test_two_card_drafts_for_one_job_coalesce_into_one_pending_row(store: SqliteStore) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "deploying_gpu"))
    await enqueue(store, job.id, card_draft(job.id, "training_started"))
    assert await count(store.db, "outbox") == 1
    (item,) = await due_outbox(store)
    assert item.dedupe_key == f"card:{job.id}"
    assert dict(item.payload) == {"reason": "training_started"}


async def test_a_card_rearmed_while_in_flight_is_not_lost(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "deploying_gpu"))
    (in_flight,) = await due_outbox(store)
    await enqueue(store, job.id, card_draft(job.id, "training_started"))  # arrives while the edit is being sent
    await store.mark_delivered(in_flight)
    (pending,) = await due_outbox(store)
    assert pending.id == in_flight.id
    assert dict(pending.payload) == {"reason": "training_started"}
    await store.mark_delivered(pending)
    assert await pending_outbox_count(store) == 0

    clock.advance(5)
    await enqueue(store, job.id, card_draft(job.id, "training_success"))  # re-arming a delivered card
    (again,) = await due_outbox(store)
    assert again.next_attempt_at == clock()
    assert dict(again.payload) == {"reason": "training_success"}


async def test_rearming_a_postponed_card_keeps_its_time(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, card_draft(job.id, "a"))
    (item,) = await due_outbox(store)
    later = clock() + timedelta(seconds=3)
    await store.postpone(item, later)
    await enqueue(store, job.id, card_draft(job.id, "b"))
    assert await due_outbox(store) == []  # coalesced, still waiting for the edit interval
    assert await store.next_outbox_due() == later
    clock.advance(3)
    (item,) = await due_outbox(store)
    assert dict(item.payload) == {"reason": "b"}
    assert item.attempts == 0


async def test_postpone_mark_failed_and_give_up(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "dm:1", {}))
    (item,) = await due_outbox(store)
    assert await store.next_outbox_due() == clock()

    await store.postpone(item, clock() + timedelta(seconds=30))
    assert await due_outbox(store) == []
    clock.advance(30)
    (item,) = await due_outbox(store)
    assert item.attempts == 0  # postponing is not an attempt

    await store.mark_failed(item, "HTTP 503 " + "x" * 1000, timedelta(minutes=1))
    assert await due_outbox(store) == []
    clock.advance(minutes=1)
    (item,) = await due_outbox(store)
    assert item.attempts == 1
    row = await store.db.fetchone("SELECT last_error FROM outbox WHERE id = ?", (item.id,))
    assert row[0].startswith("HTTP 503") and len(row[0]) == 500

    await store.mark_failed(item, "Forbidden", None)  # give up
    assert await due_outbox(store) == []
    assert await pending_outbox_count(store) == 0
    row = await store.db.fetchone("SELECT attempts, last_error, delivered_at FROM outbox WHERE id = ?", (item.id,))
    assert (row[0], row[1]) == (2, "Forbidden")
    assert row[2] is not None
    assert await store.next_outbox_due() is None


async def test_claim_outbox_order_and_limit(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "first", {}))
    clock.advance(1)
    await enqueue(store, job.id, OutboxDraft("dm", "second", {}))
    await enqueue(store, job.id, OutboxDraft("dm", "third", {}))
    lease = timedelta(seconds=60)
    assert [item.dedupe_key for item in await store.claim_outbox("a", lease=lease, limit=1)] == ["first"]
    assert [item.dedupe_key for item in await store.claim_outbox("b", lease=lease)] == ["second", "third"]
    assert await pending_outbox_count(store) == 3


# -- users, key/value, forgetting ---------------------------------------------------------------


async def test_dms_closed_flag(store: SqliteStore) -> None:
    assert await store.dms_closed(5) is False
    await store.mark_dms_closed(5)
    await store.mark_dms_closed(5)
    assert await store.dms_closed(5) is True
    assert await store.dms_closed(6) is False


async def test_key_value(store: SqliteStore) -> None:
    assert await store.get_value("commands_synced") is None
    await store.set_value("commands_synced", "v1")
    await store.set_value("commands_synced", "v2")
    assert await store.get_value("commands_synced") == "v2"
    assert await count(store.db, "kv") == 1


async def test_forget_user_cascades_to_events_and_outbox(store: SqliteStore) -> None:
    mine = await submitted_job(store, owner=1)
    await store.apply_event(mine.id, accepted("MINE"), plan_transition)
    await store.apply_event(mine.id, Event(Action.CANCEL, EventSource.USER), plan_transition)
    await new_job(store, owner=1)
    theirs = await submitted_job(store, owner=2)
    await store.apply_event(theirs.id, accepted("THEIRS"), plan_transition)
    await store.mark_dms_closed(1)
    await store.mark_dms_closed(2)
    assert await count(store.db, "outbox") == 3  # mine: card + DM; theirs: card

    assert await store.forget_user(1) == 2

    assert [row[0] for row in await store.db.fetchall("SELECT owner_id FROM jobs")] == [2]
    assert {row[0] for row in await store.db.fetchall("SELECT job_id FROM job_events")} == {theirs.id}
    assert [row[0] for row in await store.db.fetchall("SELECT job_id FROM outbox")] == [theirs.id]
    assert await store.dms_closed(1) is False
    assert await store.dms_closed(2) is True
    assert await job_by_training_id(store, "MINE") is None
    assert await store.forget_user(1) == 0


# -- query plans ------------------------------------------------------------------------------


async def query_plan(store: SqliteStore, method, *args, **kwargs) -> str:
    """Run a store method, capture its SELECT, and return SQLite's plan for that exact query."""
    seen: list[tuple[str, tuple]] = []
    fetchall = store.db.fetchall

    async def spy(sql: str, params=()):
        seen.append((sql, tuple(params)))
        return await fetchall(sql, params)

    store.db.fetchall = spy  # type: ignore[method-assign]
    try:
        await method(*args, **kwargs)
    finally:
        del store.db.fetchall
    (sql, params) = seen[-1]
    rows = await store.db.fetchall("EXPLAIN QUERY PLAN " + sql, params)
    return " | ".join(row["detail"] for row in rows)


async def test_jobs_for_owner_uses_the_owner_index(store: SqliteStore) -> None:
    for owner in (1, 2, 3):
        await submitted_job(store, owner=owner)
    plan = await query_plan(store, store.jobs_for_owner, 1, limit=10)
    assert "USING INDEX jobs_owner_newest" in plan
    assert "TEMP B-TREE" not in plan  # the index gives the order too


async def test_overdue_jobs_uses_the_partial_active_index(store: SqliteStore, clock) -> None:
    await submitted_job(store)
    plan = await query_plan(store, store.overdue_jobs, clock())
    assert "USING INDEX jobs_active_updated" in plan
    assert "TEMP B-TREE" not in plan


async def test_stored_payloads_are_json(store: SqliteStore) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "k", {"b": 1, "a": [1, 2]}))
    row = await store.db.fetchone("SELECT payload FROM outbox")
    assert json.loads(row[0]) == {"a": [1, 2], "b": 1}
    assert datetime.fromisoformat((await store.db.fetchone("SELECT created_at FROM outbox"))[0]).tzinfo == UTC


async def test_retry_outbox_now_makes_every_pending_item_due(store: SqliteStore, clock) -> None:
    job = await submitted_job(store)
    await enqueue(store, job.id, OutboxDraft("dm", "waiting", {}))
    await enqueue(store, job.id, OutboxDraft("dm", "done", {}))
    waiting, done = await due_outbox(store)
    await store.mark_failed(waiting, "Discord is down", timedelta(minutes=30))
    await store.mark_delivered(done)
    assert await due_outbox(store) == []

    assert await store.retry_outbox_now() == 1
    (item,) = await due_outbox(store)
    assert item.dedupe_key == "waiting"
    assert item.attempts == 1  # the count of failed attempts is kept
    assert await store.retry_outbox_now() == 0


async def test_a_provider_report_for_a_finished_job_writes_nothing(store: SqliteStore) -> None:
    """The terminal check is made inside the transaction, so a webhook racing model_ready
    cannot slip an event row in after the job finished."""
    job = await submitted_job(store)
    await store.apply_event(job.id, accepted("RACE"), plan_transition)
    await store.apply_event(
        job.id, Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="model_ready"), plan_transition
    )
    before = await row_counts(store.db)
    finished = await store.require_job(job.id)
    late = Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="training_started")
    result = await store.apply_event(job.id, late, plan_transition)
    assert not result.plan.write and not result.event_recorded
    assert await row_counts(store.db) == before
    assert (await store.require_job(job.id)).updated_at == finished.updated_at


async def test_autocomplete_searches_only_the_newest_window_of_jobs(store: SqliteStore) -> None:
    for index in range(6):
        await submitted_job(store, owner=5, name=f"cat-{index}")
    found = await store.search_owner_jobs(5, "cat", window=4)
    assert [job.name for job in found] == ["cat-5", "cat-4", "cat-3", "cat-2"]
    assert await store.search_owner_jobs(5, "cat-0", window=4) == []  # older than the window
    assert [job.name for job in await store.search_owner_jobs(5, "cat-0")] == ["cat-0"]
