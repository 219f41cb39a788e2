"""JobStore contract: users and key/value, previews kept in the database, /forgetme, the provider
account's listings, and the per-state counts the triggers keep. Every test runs on SQLite and on
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.jobs.generations import GenerationEvent, plan_generation
from bot.jobs.model import FORGOTTEN_MEMBER, Job, JobNotFound, OutboxDraft, PreviewPhoto, TransitionPlan
from bot.jobs.states import Action, Event, EventSource
from bot.jobs.transitions import plan_transition
from tests.store.contract.conftest import (
    Harness,
    accepted,
    new_generation,
    new_job,
    ready_job,
    submitted_job,
    webhook,
)
from tests.store.helpers import job_by_training_id


async def test_dms_closed_flag(harness: Harness) -> None:
    store = harness.jobs
    assert await store.dms_closed(5) is False
    await store.mark_dms_closed(5)
    await store.mark_dms_closed(5)
    assert await store.dms_closed(5) is True
    assert await store.dms_closed(6) is False
    assert await harness.count("users") == 1


async def test_key_value(harness: Harness) -> None:
    store = harness.jobs
    assert await store.get_value("commands_synced") is None
    await store.set_value("commands_synced", "v1")
    await store.set_value("commands_synced", "v2")
    await store.set_value("other", "")
    assert await store.get_value("commands_synced") == "v2"
    assert await store.get_value("other") == ""
    assert await harness.count("kv") == 2


# -- previews -------------------------------------------------------------------------------------


async def test_a_preview_round_trips_and_is_dropped(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await new_job(store)
    photos = [PreviewPhoto(f"photo{i}.jpg", bytes([i]) * 100 + b"\x00\xff") for i in range(1, 6)]
    expires = clock() + timedelta(minutes=10)
    await store.save_preview(job.id, photos, card_in_dms=True, expires_at=expires)
    preview = await store.load_preview(job.id)
    assert preview is not None
    assert preview.job_id == job.id
    assert preview.photos == tuple(photos)  # in order, byte for byte
    assert preview.card_in_dms is True and preview.expires_at == expires
    await store.drop_preview(job.id)
    assert await store.load_preview(job.id) is None
    assert await harness.count("preview_photos") == 0
    await store.drop_preview(job.id)  # dropping twice is fine


async def test_a_preview_without_photos_and_one_for_a_missing_job(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await new_job(store)
    await store.save_preview(job.id, [], card_in_dms=False, expires_at=clock())
    preview = await store.load_preview(job.id)
    assert preview is not None and preview.photos == () and preview.card_in_dms is False
    with pytest.raises(JobNotFound):
        await store.save_preview(404, [PreviewPhoto("a.jpg", b"a")], card_in_dms=False, expires_at=clock())
    assert await harness.count("previews") == 1
    assert await harness.count("preview_photos") == 0


async def test_leaving_preview_drops_the_preview_in_the_same_transaction(harness: Harness) -> None:
    """Started, dismissed or expired: whatever moves a job out of preview deletes its crops."""
    store, clock = harness.jobs, harness.clock
    started, expired, failing = [await new_job(store) for _ in range(3)]
    photos = [PreviewPhoto("a.jpg", b"a"), PreviewPhoto("b.jpg", b"b")]
    for job in (started, expired, failing):
        await store.save_preview(job.id, photos, card_in_dms=False, expires_at=clock())

    def fails_after_the_update(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        return TransitionPlan(plan.new_state, plan.recorded_status, plan.reason, {}, (OutboxDraft("bad", "k"),))

    await store.apply_event(started.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    await store.apply_event(expired.id, Event(Action.EXPIRE, EventSource.USER), plan_transition)
    with pytest.raises(harness.integrity_error):
        await store.apply_event(failing.id, Event(Action.SUBMIT, EventSource.USER), fails_after_the_update)
    assert await store.load_preview(started.id) is None
    assert await store.load_preview(expired.id) is None
    kept = await store.load_preview(failing.id)  # the failed change took nothing with it
    assert kept is not None and kept.photos == tuple(photos)
    assert await harness.count("preview_photos") == 2
    await store.touch(failing.id)  # a change that leaves the state alone keeps the preview
    assert await store.load_preview(failing.id) is not None


# -- forgetting a member ----------------------------------------------------------------------------


async def test_forget_user_cascades_to_everything_about_them(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    mine = await ready_job(store, owner=1, training_id="MINE")
    generation = await harness.generations.create(new_generation(mine))
    await harness.generations.apply(generation.id, lambda g: plan_generation(g, GenerationEvent("submit"), clock()))
    cancelled = await submitted_job(store, owner=1)
    await store.apply_event(cancelled.id, Event(Action.CANCEL, EventSource.USER), plan_transition)
    preview = await new_job(store, owner=1)
    await store.save_preview(preview.id, [PreviewPhoto("a.jpg", b"a")], card_in_dms=False, expires_at=clock())
    await store.record_listing(["MINE", "THEIRS", "NOBODYS"])
    theirs = await submitted_job(store, owner=2)
    await store.apply_event(theirs.id, accepted("THEIRS"), plan_transition)
    await store.mark_dms_closed(1)
    await store.mark_dms_closed(2)
    await store.set_value("kept", "yes")
    await harness.guild_settings.update_guild_overrides(77, {"imagine_cooldown_seconds": 5}, changed_by=1)
    await harness.guild_settings.update_guild_overrides(77, {"imagine_cooldown_seconds": 6}, changed_by=2)

    assert await store.forget_user(1) == 3

    assert [row[0] for row in await harness.rows("SELECT owner_id FROM jobs")] == [2]
    assert {row[0] for row in await harness.rows("SELECT job_id FROM job_events")} == {theirs.id}
    assert [row[0] for row in await harness.rows("SELECT job_id FROM outbox")] == [theirs.id]
    for table in ("generations", "generation_images", "previews", "preview_photos"):
        assert await harness.count(table) == 0, table
    assert sorted(row[0] for row in await harness.rows("SELECT training_id FROM provider_models")) == [
        "NOBODYS",
        "THEIRS",
    ]
    assert await store.dms_closed(1) is False
    assert await store.dms_closed(2) is True
    assert await store.get_value("kept") == "yes"
    # The server's settings history keeps what changed, but no longer who: only member 2 is named.
    history = await harness.guild_settings.guild_setting_changes(77)
    assert [(c.new, c.changed_by) for c in history] == [(6, 2), (5, FORGOTTEN_MEMBER)]
    assert await harness.guild_settings.guild_overrides(77) == {"imagine_cooldown_seconds": 6}
    assert await job_by_training_id(store, "MINE") is None
    assert nonzero(await store.state_counts()) == await grouped_counts(harness)
    assert await store.forget_user(1) == 0


# -- the provider account's models --------------------------------------------------------------


async def test_listings_remember_where_each_model_was_first_seen(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    first = await store.record_listing(["A", "B"])
    second = await store.record_listing(["A", "B", "C", "C"], baseline_for=job.id)
    assert second > first
    assert (await store.require_job(job.id)).baseline_listing == second
    third = await store.record_listing(["A", "B", "C", "D", "E"])
    assert await store.unclaimed_models_since(first) == {"C", "D", "E"}
    assert await store.unclaimed_models_since(second) == {"D", "E"}
    await store.apply_event(job.id, accepted("D"), plan_transition)  # D is this job's training now
    assert await store.unclaimed_models_since(second) == {"E"}
    assert await store.unclaimed_models_since(third) == set()
    assert await store.record_listing([]) > third
    assert await harness.count("provider_models") == 5


# -- per-state counts kept by triggers ------------------------------------------------------------


async def grouped_counts(harness: Harness) -> dict[str, dict[str, int]]:
    """What the triggers should say: the tables counted by state."""
    counts: dict[str, dict[str, int]] = {}
    for entity in ("jobs", "generations"):
        for state, rows in await harness.rows(f"SELECT state, COUNT(*) FROM {entity} GROUP BY state"):
            counts.setdefault(entity, {})[state] = int(rows)
    return counts


def nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    kept = {entity: {s: n for s, n in states.items() if n} for entity, states in counts.items()}
    return {entity: states for entity, states in kept.items() if states}


async def test_state_counts_follow_every_insert_change_and_deletion(harness: Harness) -> None:
    store, generations, clock = harness.jobs, harness.generations, harness.clock
    assert nonzero(await store.state_counts()) == {}
    jobs = [await submitted_job(store, owner=owner) for owner in (1, 1, 2)]
    for job in jobs:
        await store.apply_event(job.id, accepted(f"T{job.id}"), plan_transition)
    await new_job(store, owner=2)
    await store.apply_event(jobs[0].id, webhook("model_ready"), plan_transition)
    await store.apply_event(jobs[0].id, webhook("model_ready"), plan_transition)  # a duplicate counts once
    await store.apply_event(jobs[1].id, Event(Action.CANCEL, EventSource.USER), plan_transition)
    for job in jobs:
        created = await generations.create(new_generation(job))
        if job is jobs[0]:
            await generations.apply(created.id, lambda g: plan_generation(g, GenerationEvent("submit"), clock()))
    expected = {
        "jobs": {"model_ready": 1, "cancelled": 1, "deploying_gpu": 1, "preview": 1},
        "generations": {"submitting": 1, "queued": 2},
    }
    assert nonzero(await store.state_counts()) == await grouped_counts(harness) == expected
    await store.forget_user(1)  # deletes jobs, and their generations by cascade
    assert nonzero(await store.state_counts()) == await grouped_counts(harness)
    assert await grouped_counts(harness) == {"jobs": {"deploying_gpu": 1, "preview": 1}, "generations": {"queued": 1}}


async def test_a_failed_change_leaves_the_counts_alone(harness: Harness) -> None:
    store = harness.jobs
    job = await submitted_job(store)
    counts = await store.state_counts()

    def broken(current: Job, event: Event) -> TransitionPlan:
        plan = plan_transition(current, event)
        return TransitionPlan(plan.new_state, plan.recorded_status, plan.reason, {}, (OutboxDraft("bad", "k"),))

    with pytest.raises(harness.integrity_error):
        await store.apply_event(job.id, accepted("T"), broken)
    assert await store.state_counts() == counts
    assert nonzero(counts) == await grouped_counts(harness) == {"jobs": {"submitting": 1}}
