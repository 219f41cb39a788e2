"""SqliteStore: outbox leases (one deliverer at a time) and previews kept in the database."""

from __future__ import annotations

from datetime import timedelta

from bot.jobs.model import JobNotFound, PreviewPhoto
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import dm_draft, plan_transition
from bot.store.sqlite import SqliteStore
from tests.store.test_repository import new_job
from tests.store_helpers import enqueue

LEASE = timedelta(seconds=60)


async def a_pending_dm(store: SqliteStore) -> int:
    job = await new_job(store)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    await enqueue(store, job.id, dm_draft(job.id, JobState.FAILED))
    return job.id


async def test_a_claimed_item_is_not_claimed_again_until_its_lease_runs_out(store: SqliteStore, clock) -> None:
    await a_pending_dm(store)
    first = await store.claim_outbox("a", lease=LEASE)
    assert len(first) == 1
    assert await store.claim_outbox("b", lease=LEASE) == []
    assert [i.id for i in await store.claim_outbox("a", lease=LEASE)] == [first[0].id]  # its own, again
    assert await store.next_outbox_due() == clock() + LEASE  # due again when the lease ends
    clock.advance(LEASE.total_seconds())
    again = await store.claim_outbox("b", lease=LEASE)  # "a" died: "b" takes it over
    assert [item.id for item in again] == [first[0].id]


async def test_delivering_or_postponing_ends_the_lease(store: SqliteStore, clock) -> None:
    await a_pending_dm(store)
    [item] = await store.claim_outbox("a", lease=LEASE)
    await store.postpone(item, clock() + timedelta(seconds=5))
    assert await store.claim_outbox("b", lease=LEASE) == []
    clock.advance(5)
    [item] = await store.claim_outbox("b", lease=LEASE)
    await store.mark_delivered(item)
    clock.advance(LEASE.total_seconds() * 2)
    assert await store.claim_outbox("c", lease=LEASE) == []
    assert await store.next_outbox_due() is None


async def test_a_preview_round_trips_and_goes_with_the_job(store: SqliteStore, clock) -> None:
    job = await new_job(store)
    photos = [PreviewPhoto(f"photo{i}.jpg", bytes([i]) * 100) for i in range(1, 6)]
    await store.save_preview(job.id, photos, card_in_dms=True, expires_at=clock() + LEASE)
    preview = await store.load_preview(job.id)
    assert preview is not None
    assert preview.photos == tuple(photos) and preview.card_in_dms and preview.expires_at == clock() + LEASE
    await store.drop_preview(job.id)
    assert await store.load_preview(job.id) is None

    await store.save_preview(job.id, photos[:1], card_in_dms=False, expires_at=clock())
    await store.forget_user(job.owner_id)
    assert await store.load_preview(job.id) is None
    assert int((await store.db.fetchone("SELECT COUNT(*) FROM preview_photos"))[0]) == 0


async def test_a_preview_for_a_missing_job_is_refused(store: SqliteStore, clock) -> None:
    try:
        await store.save_preview(404, [], card_in_dms=False, expires_at=clock())
    except JobNotFound:
        return
    raise AssertionError("expected JobNotFound")
