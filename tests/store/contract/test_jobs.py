"""JobStore contract, jobs: create and read, listings for /mymodels, autocomplete, quotas, the
reconciler's scans, card and submission data. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.jobs.model import JobNotFound
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from tests.store.contract.conftest import Harness, accepted, new_job, submitted_job, webhook
from tests.store.helpers import job_by_training_id


async def test_create_and_get_a_job(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    job = await store.create_job(
        owner_id=7,
        guild_id=None,
        channel_id=99,
        name="my dog",
        params={"seed": 3, "instance_prompt": "photo of sks dog", "nested": {"b": [1, 2], "a": None}},
        image_count=8,
    )
    assert job.state is JobState.PREVIEW
    assert (job.owner_id, job.guild_id, job.channel_id, job.name, job.image_count) == (7, None, 99, "my dog", 8)
    assert dict(job.params) == {"seed": 3, "instance_prompt": "photo of sks dog", "nested": {"b": [1, 2], "a": None}}
    assert job.created_at == job.updated_at == job.progressed_at == clock()
    assert job.training_id is None and job.submitted_at is None and job.finished_at is None
    assert job.image_urls == () and job.baseline_listing is None
    assert await store.get_job(job.id) == job
    assert await store.require_job(job.id) == job
    assert await store.get_job(job.id + 1) is None
    with pytest.raises(JobNotFound):
        await store.require_job(job.id + 1)


async def test_discord_snowflakes_do_not_fit_32_bits_and_are_kept_exactly(harness: Harness) -> None:
    owner, guild, channel, message = 2**62 + 1, 1_152_921_504_606_846_977, 645027906669510667, 2**63 - 1
    job = await harness.jobs.create_job(
        owner_id=owner, guild_id=guild, channel_id=channel, name="n", params={}, image_count=5
    )
    await harness.jobs.set_card(job.id, channel, message)
    job = await harness.jobs.require_job(job.id)
    assert (job.owner_id, job.guild_id, job.channel_id, job.card_message_id) == (owner, guild, channel, message)
    assert [j.id for j in await harness.jobs.jobs_for_owner(owner, limit=5)] == []  # a preview is not listed
    await harness.jobs.mark_dms_closed(owner)
    assert await harness.jobs.dms_closed(owner)


async def test_negative_image_count_is_refused_by_the_schema(harness: Harness) -> None:
    with pytest.raises(harness.integrity_error):
        await harness.jobs.create_job(owner_id=1, guild_id=None, channel_id=1, name="x", params={}, image_count=-1)
    assert await harness.count("jobs") == 0


async def test_timestamps_are_timezone_aware_utc_and_naive_ones_refused(harness: Harness) -> None:
    moment = datetime(2030, 6, 1, 17, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
    store = harness.job_store(lambda: moment)
    job = await submitted_job(store)
    for value in (job.created_at, job.updated_at, job.progressed_at, job.submitted_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
        assert value == moment  # the same instant, to the microsecond
    naive = harness.job_store(lambda: datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await new_job(naive)
    assert await harness.count("jobs") == 1


async def test_job_card_submission_data_and_touch(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
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


async def test_get_job_by_training_id(harness: Harness) -> None:
    job = await submitted_job(harness.jobs)
    await harness.jobs.apply_event(job.id, accepted("F5jvdzGnYi"), plan_transition)
    found = await job_by_training_id(harness.jobs, "F5jvdzGnYi")
    assert found is not None and found.id == job.id
    assert await job_by_training_id(harness.jobs, "other") is None


async def test_jobs_for_owner_newest_first_paged_without_previews_or_other_users(harness: Harness) -> None:
    store = harness.jobs
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
    assert await store.count_jobs_for_owner(3) == 0


async def test_search_owner_jobs(harness: Harness) -> None:
    store = harness.jobs
    cat = await submitted_job(store, name="Cat portraits")
    sale = await submitted_job(store, name="50% off_sale")
    dog = await submitted_job(store, name="dog \\ backslash")
    await store.apply_event(dog.id, accepted("TRAIN123xyz"), plan_transition)
    await submitted_job(store, owner=2, name="Cat of someone else")
    await new_job(store, name="Cat preview")

    async def found(text: str, **options: object) -> list[int]:
        return [job.id for job in await store.search_owner_jobs(1, text, **options)]  # type: ignore[arg-type]

    assert await found("") == [dog.id, sale.id, cat.id]
    assert await found("cat") == [cat.id]  # case-insensitive, not another user's, not a preview
    assert await found("CAT P") == [cat.id]
    assert await found("%") == [sale.id]  # a literal percent sign, not a wildcard
    assert await found("_") == [sale.id]  # a literal underscore
    assert await found("\\") == [dog.id]  # a literal backslash, not an escape
    assert await found("123xy") == [dog.id]  # by training id
    assert await found("train123") == [dog.id]  # training ids case-insensitively too
    assert sale.id in await found(str(sale.id))  # by job id
    assert cat.id not in await found(str(sale.id))
    assert await found("nothing") == []
    assert len(await store.search_owner_jobs(1, "", limit=2)) == 2
    assert await found("", ready=True) == []
    await store.apply_event(dog.id, webhook("model_ready"), plan_transition)
    assert await found("", ready=True) == [dog.id]  # ready, with a training id


async def test_autocomplete_searches_only_the_newest_window_of_jobs(harness: Harness) -> None:
    for index in range(6):
        await submitted_job(harness.jobs, owner=5, name=f"cat-{index}")
    found = await harness.jobs.search_owner_jobs(5, "cat", window=4)
    assert [job.name for job in found] == ["cat-5", "cat-4", "cat-3", "cat-2"]
    assert await harness.jobs.search_owner_jobs(5, "cat-0", window=4) == []  # older than the window
    assert [job.name for job in await harness.jobs.search_owner_jobs(5, "cat-0")] == ["cat-0"]


async def test_count_active_jobs(harness: Harness) -> None:
    store = harness.jobs
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
    assert await store.count_pollable_jobs() == 1  # only the training one has a training id


async def test_submissions_since(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
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


async def test_overdue_jobs_only_non_terminal_older_than_the_cutoff_oldest_first(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
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


async def test_job_ids_in_states(harness: Harness) -> None:
    preview = await new_job(harness.jobs)
    submitting = await submitted_job(harness.jobs)
    assert await harness.jobs.job_ids_in_states([JobState.PREVIEW]) == [preview.id]
    assert await harness.jobs.job_ids_in_states([JobState.SUBMITTING, JobState.PREVIEW]) == [preview.id, submitting.id]
    assert await harness.jobs.job_ids_in_states([JobState.SUBMITTING, JobState.PREVIEW], limit=1) == [preview.id]
    assert await harness.jobs.job_ids_in_states([JobState.FAILED]) == []


async def test_guild_jobs_are_one_servers_jobs_in_the_states_asked_newest_first(harness: Harness) -> None:
    store = harness.jobs
    guild = 1_152_921_504_606_846_977  # more than 2**53
    preview = await new_job(store, guild=guild)
    first = await submitted_job(store, owner=1, guild=guild)
    second = await submitted_job(store, owner=2, guild=guild)
    training = await submitted_job(store, owner=3, guild=guild)
    await store.apply_event(training.id, accepted("T-guild"), plan_transition)
    await submitted_job(store, guild=20)  # another server
    await submitted_job(store, guild=None)  # a DM job

    submitting = [JobState.SUBMITTING]
    assert [j.id for j in await store.guild_jobs(guild, submitting)] == [second.id, first.id]
    both = [JobState.SUBMITTING, JobState.DEPLOYING_GPU]
    assert [j.id for j in await store.guild_jobs(guild, both)] == [training.id, second.id, first.id]
    assert [j.id for j in await store.guild_jobs(guild, both, limit=2)] == [training.id, second.id]
    assert [j.id for j in await store.guild_jobs(guild, [JobState.PREVIEW])] == [preview.id]
    assert await store.guild_jobs(guild, [JobState.FAILED]) == []
    assert await store.guild_jobs(guild, []) == []
    assert await store.guild_jobs(30, submitting) == []
    found = await store.guild_jobs(guild, [JobState.DEPLOYING_GPU])
    assert found == [await store.require_job(training.id)]  # whole jobs, as get_job reads them


async def test_guild_jobs_updated_since(harness: Harness) -> None:
    store, clock = harness.jobs, harness.clock
    stale = await submitted_job(store)
    touched = await submitted_job(store)
    clock.advance(minutes=10)
    cutoff = clock()
    recent = await submitted_job(store)
    clock.advance(minutes=10)
    await store.touch(touched.id)
    states = [JobState.SUBMITTING]

    assert [j.id for j in await store.guild_jobs(10, states)] == [recent.id, touched.id, stale.id]
    assert [j.id for j in await store.guild_jobs(10, states, updated_since=cutoff)] == [recent.id, touched.id]
    assert [j.id for j in await store.guild_jobs(10, states, updated_since=clock())] == [touched.id]
    assert await store.guild_jobs(10, states, updated_since=clock() + timedelta(seconds=1)) == []
    other_zone = cutoff.astimezone(timezone(timedelta(hours=-7)))  # the same instant
    assert [j.id for j in await store.guild_jobs(10, states, updated_since=other_zone)] == [recent.id, touched.id]
