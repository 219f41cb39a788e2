"""What members may see of the jobs: only their own (a manager: their guild's), never a preview,
pages clamped to what exists, and the provider asked only about a running training."""

from __future__ import annotations

import pytest

from bot.errors import UserError
from bot.jobs.model import Job
from bot.jobs.queries import NOT_FOUND, JobQueries
from bot.jobs.states import Action, Event, EventSource
from bot.jobs.training_api import TrainingStatus
from bot.jobs.transitions import plan_transition
from bot.store.sqlite import SqliteStore

ALICE, BOB, GUILD = 1, 2, 10


class StatusProvider:
    """Answers `training_status` and counts the calls; the other calls are not expected."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def training_status(self, training_id: str) -> TrainingStatus:
        self.asked.append(training_id)
        return TrainingStatus.from_payload({"status": "success", "messege": "training_started", "data": "ETA: 5 min"})


async def new_job(store: SqliteStore, owner: int = ALICE, *, name: str = "n", submit: bool = True) -> Job:
    job = await store.create_job(owner_id=owner, guild_id=GUILD, channel_id=5, name=name, params={}, image_count=5)
    if not submit:
        return job
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    accepted = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=f"T{job.id}")
    return (await store.apply_event(job.id, accepted, plan_transition)).after


@pytest.fixture
def provider() -> StatusProvider:
    return StatusProvider()


@pytest.fixture
def queries(store: SqliteStore, provider: StatusProvider) -> JobQueries:
    return JobQueries(store, provider)  # type: ignore[arg-type]


async def refusal(queries: JobQueries, user: int, ref: str | None, manager_guild: int | None = None) -> str:
    with pytest.raises(UserError) as caught:
        await queries.owned_job(user, ref, manager_guild=manager_guild)
    return str(caught.value)


async def test_a_member_finds_their_own_job_by_id_or_their_latest(store: SqliteStore, queries: JobQueries) -> None:
    first = await new_job(store)
    latest = await new_job(store)
    await new_job(store, BOB)
    assert (await queries.owned_job(ALICE, f"#{first.id}")).id == first.id
    assert (await queries.owned_job(ALICE, str(first.id))).id == first.id
    assert (await queries.owned_job(ALICE, None)).id == latest.id


async def test_another_members_job_answers_like_a_missing_one(store: SqliteStore, queries: JobQueries) -> None:
    bobs = await new_job(store, BOB)
    assert await refusal(queries, ALICE, str(bobs.id)) == NOT_FOUND
    assert await refusal(queries, ALICE, "999999") == NOT_FOUND
    assert await refusal(queries, ALICE, "not an id") == NOT_FOUND
    assert "no trainings yet" in await refusal(queries, ALICE, None)


async def test_a_preview_is_never_shown(store: SqliteStore, queries: JobQueries) -> None:
    preview = await new_job(store, submit=False)
    assert await refusal(queries, ALICE, str(preview.id)) == NOT_FOUND


async def test_a_manager_may_name_any_job_of_their_guild_only(store: SqliteStore, queries: JobQueries) -> None:
    bobs = await new_job(store, BOB)
    assert (await queries.owned_job(ALICE, str(bobs.id), manager_guild=GUILD)).id == bobs.id
    assert await refusal(queries, ALICE, str(bobs.id), manager_guild=GUILD + 1) == NOT_FOUND


async def test_search_and_pages_cover_the_members_jobs_only(store: SqliteStore, queries: JobQueries) -> None:
    mine = [await new_job(store, name=f"run {i}") for i in range(5)]
    await new_job(store, BOB, name="run bob")
    assert [job.id for job in await queries.search(ALICE, "#run")] == [job.id for job in reversed(mine)]
    page = await queries.page(ALICE, 7, size=2)  # past the end: the last page
    assert (page.page, page.pages, page.total) == (2, 3, 5)
    assert [job.id for job in page.jobs] == [mine[0].id]
    first = await queries.page(ALICE, -1, size=2)
    assert first.page == 0 and [job.id for job in first.jobs] == [mine[4].id, mine[3].id]


async def test_the_provider_is_asked_only_about_a_running_training(
    store: SqliteStore, queries: JobQueries, provider: StatusProvider
) -> None:
    running = await new_job(store)
    live = await queries.live_status(running)
    assert live is not None and live.status == "training_started" and provider.asked == [running.training_id]
    cancelled = Event(Action.CANCEL, EventSource.USER)
    done = (await store.apply_event(running.id, cancelled, plan_transition)).after
    assert await queries.live_status(done) is None
    assert await queries.live_status(await new_job(store, submit=False)) is None
    assert provider.asked == [running.training_id]
    assert [event.status for event in await queries.timeline(done)][-1] == "cancelled"
