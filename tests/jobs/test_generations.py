"""Generations against the real store (temp SQLite) and a real ProviderClient on scripted HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from PIL import Image

from bot.config import Settings
from bot.errors import UserError
from bot.jobs.generation_model import Generation, GenerationState
from bot.jobs.generations import (
    Destination,
    GenerationEvent,
    GenerationRunner,
    GenerationService,
    ImagineOptions,
    full_prompt,
    plan_generation,
)
from bot.jobs.limits import LimitReached, Requester
from bot.jobs.model import Job
from bot.jobs.server_settings import ServerSettings
from bot.jobs.states import Action, Event, EventSource
from bot.jobs.transitions import plan_transition
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore
from tests.store_helpers import require_generation

TID = "F5jvdzGnYi"
CHANNEL = 645027906669510667


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def ok(body: dict, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def success(request_id: int = 77, count: int = 2, nsfw: object = False) -> dict:
    urls = [f"https://pub.example.dev/generations/{request_id}-{i}.png" for i in range(count)]
    return {"status": "success", "id": request_id, "output": urls, "nsfw_content_detected": nsfw, "meta": {"seed": 5}}


def processing(request_id: int = 77, eta: float = 4.0) -> dict:
    return {
        "status": "processing",
        "id": request_id,
        "eta": eta,
        "fetch_result": f"https://elsewhere.example/api/v6/images/fetch/{request_id}",
        "output": [],
        "future_links": [f"https://pub.example.dev/generations/{request_id}-0.png"],
    }


class Provider:
    """Scripted answers per endpoint (a list is played in order); keeps every request."""

    def __init__(self, **answers: object) -> None:
        self.answers = {"image": lambda _r: httpx.Response(200, content=png(), headers={"content-type": "image/png"})}
        self.answers.update(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        endpoint = "image" if path.startswith("/generations/") else path.rsplit("/images/", 1)[-1].split("/")[0]
        answer = self.answers.get(endpoint)
        if isinstance(answer, list):
            answer = answer.pop(0)
        if answer is None:
            raise AssertionError(f"unexpected call {request.url}")
        if isinstance(answer, BaseException):
            raise answer
        return answer(request) if callable(answer) else answer  # type: ignore[operator,return-value]

    def calls(self, endpoint: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(f"/images/{endpoint}") or f"/{endpoint}/" in r.url.path]


@pytest.fixture
def world(store: SqliteStore, settings, make_provider, clock):
    def build(**answers: object) -> tuple[GenerationService, GenerationRunner, Provider, list[int]]:
        provider = Provider(**answers)
        outbox: list[int] = []
        gens = SqliteGenerationStore(store.db, now=store.now)
        service = GenerationService(
            store, gens, make_provider(provider), settings, on_outbox=lambda: outbox.append(1), rng=random.Random(3)
        )
        runner = GenerationRunner(service)
        return service, runner, provider, outbox

    return build


async def ready_model(store: SqliteStore, owner: int = 1, training_id: str = TID, base: str = "sdxl") -> Job:
    params = {"instance_prompt": "photo of sks man", "class_prompt": "photo of a man", "base_model": base}
    job = await store.create_job(
        owner_id=owner, guild_id=1, channel_id=CHANNEL, name="me", params=params, image_count=5
    )
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    accepted = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)
    await store.apply_event(job.id, accepted, plan_transition)
    ready = Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status="model_ready")
    return (await store.apply_event(job.id, ready, plan_transition)).after


async def drive(runner: GenerationRunner, clock, generation_id: int, *, steps: int = 6) -> GenerationState:
    """Run the runner's passes (awaiting the work they start) and move the clock to each next check."""
    started: list = []
    runner._spawn = lambda _name, coro: started.append(coro)  # run the work inline, in order
    state = GenerationState.QUEUED
    for _ in range(steps):
        await runner.run_once()
        while started:
            await started.pop(0)
        generation = await require_generation(runner.generations, generation_id)
        state = generation.state
        if state.is_terminal:
            break
        clock.current = max(clock.current, generation.next_check_at)
    return state


def use_settings(service: GenerationService, settings: Settings) -> None:
    """Run `service` under other settings: the environment's, as every server's too."""
    service.settings = settings
    service.server_settings = ServerSettings.environment_only(settings)


HERE = Destination(1, CHANNEL)
#: The owner of the models these tests make (user 1), asking from guild 1.
OWNER_1 = Requester(1, 1)


# -- starting -------------------------------------------------------------------------------------------


async def test_the_trigger_words_lead_the_prompt_once() -> None:
    job = Job.__new__(Job)
    object.__setattr__(job, "params", {"instance_prompt": "photo of sks man"})
    assert full_prompt(job, "on a beach at sunset") == "photo of sks man, on a beach at sunset"
    assert full_prompt(job, "Photo of SKS man on a beach") == "Photo of SKS man on a beach"


async def test_only_the_owners_ready_models_can_be_used(world, store: SqliteStore) -> None:
    service, *_ = world()
    mine = await ready_model(store, owner=1)
    theirs = await ready_model(store, owner=2, training_id="THEIRS0001")
    training = await store.create_job(owner_id=1, guild_id=1, channel_id=2, name="wip", params={}, image_count=5)
    await store.apply_event(training.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)

    assert (await service.model_for(1, None)).id == mine.id
    assert (await service.model_for(1, f"#{mine.id}")).id == mine.id
    assert (await service.model_for(1, TID)).id == mine.id
    for reference in (str(theirs.id), "THEIRS0001", str(training.id), "nonsense", "99999"):
        with pytest.raises(UserError, match="isn't one of your ready models"):
            await service.model_for(1, reference)
    assert [job.id for job in await service.ready_models(1)] == [mine.id]
    with pytest.raises(UserError, match="no ready model"):
        await service.model_for(3, None)


async def test_imagine_writes_the_generation_before_anything_is_sent(world, store: SqliteStore, settings) -> None:
    service, _runner, provider, _ = world()
    job = await ready_model(store, base="normal")
    generation = await service.imagine(OWNER_1, job, ImagineOptions("on a beach", strength=0.6, count=3), HERE)
    assert generation.state is GenerationState.QUEUED and provider.requests == []
    assert (generation.width, generation.height) == (512, 512)
    assert generation.base_model_id == settings.sdapi_base_model_sd15
    assert generation.lora_model == TID and generation.samples == 3 and generation.strength == 0.6
    assert generation.prompt == "photo of sks man, on a beach" and generation.user_prompt == "on a beach"
    assert generation.safety_checker and 0 < generation.seed < 2**32


async def test_the_safety_checker_is_off_only_where_allowed_and_age_restricted(
    world, store: SqliteStore, make_settings
) -> None:
    service, *_ = world()
    job = await ready_model(store)
    use_settings(service, make_settings(imagine_safety_checker_off_in_nsfw_channels=True, imagine_cooldown_seconds=0))
    nsfw = await service.imagine(OWNER_1, job, ImagineOptions("x"), Destination(1, CHANNEL, age_restricted=True))
    sfw = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    assert not nsfw.safety_checker and sfw.safety_checker


async def test_cooldown_and_daily_quota(world, store: SqliteStore, clock, make_settings) -> None:
    service, *_ = world()
    use_settings(service, make_settings(imagine_cooldown_seconds=60, max_pictures_per_user_per_day=5))
    job = await ready_model(store)
    await service.imagine(OWNER_1, job, ImagineOptions("a", count=4), HERE)
    with pytest.raises(LimitReached, match=r"again <t:\d+:R>"):
        await service.imagine(OWNER_1, job, ImagineOptions("b"), HERE)
    clock.advance(61)
    with pytest.raises(LimitReached, match=r"1 of your 5 pictures.*<t:\d+:R>") as info:
        await service.imagine(OWNER_1, job, ImagineOptions("c", count=2), HERE)
    assert info.value.retry_at is not None and info.value.retry_at > clock()
    await service.imagine(OWNER_1, job, ImagineOptions("d", count=1), HERE)  # exactly the quota
    clock.advance(days=1)
    await service.imagine(OWNER_1, job, ImagineOptions("e", count=4), HERE)


# -- the runner -----------------------------------------------------------------------------------------


async def test_processing_then_success_downloads_and_queues_the_result_once(world, store: SqliteStore, clock) -> None:
    service, runner, provider, outbox = world(
        text2img=ok(processing(eta=4)), fetch=[ok(processing(eta=100)), ok(success(count=2, nsfw=[False, True]))]
    )
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("on a beach", count=2), HERE)
    assert await drive(runner, clock, generation.id) is GenerationState.READY

    sent = json.loads(provider.calls("text2img")[0].content)
    assert sent["lora_model"] == TID and sent["model_id"] == "tamarin-xl-v1" and sent["samples"] in ("2", 2)
    assert sent["prompt"].startswith("photo of sks man") and sent["webhook"] is None
    assert sent["track_id"] == f"lorabot-generation-{generation.id}"
    fetches = provider.calls("fetch")
    assert len(fetches) == 2 and all("elsewhere.example" not in str(r.url) for r in provider.requests)
    pictures = await service.generations.pictures(generation.id)
    assert [p.nsfw for p in pictures] == [False, True] and all(p.data for p in pictures)
    rows = await store.db.fetchall("SELECT dedupe_key FROM outbox WHERE kind = 'generation'")
    assert [r[0] for r in rows] == [f"generation:{generation.id}"] and outbox == [1]


async def test_the_eta_is_followed_within_bounds(world, store: SqliteStore, clock) -> None:
    service, runner, _provider, _ = world(text2img=ok(processing(eta=500)))
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    before = clock()
    await drive(runner, clock, generation.id, steps=1)
    after = await require_generation(service.generations, generation.id)
    assert after.state is GenerationState.PROCESSING and after.request_id == "77"
    assert after.next_check_at - before == timedelta(seconds=30)


async def test_a_full_queue_requeues_after_retry_after_and_submits_once_more(world, store: SqliteStore, clock) -> None:
    full = {"status": "error", "message": "Rate limit exceeded. Maximum 5 queued requests allowed.", "retry_after": 9}
    service, runner, provider, _ = world(text2img=[ok(full, 429), ok(success(count=1))])
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    started = clock()
    await drive(runner, clock, generation.id, steps=1)
    queued = await require_generation(service.generations, generation.id)
    assert queued.state is GenerationState.QUEUED and queued.attempts == 1
    assert queued.next_check_at - started == timedelta(seconds=9)
    assert await drive(runner, clock, generation.id) is GenerationState.READY
    assert len(provider.calls("text2img")) == 2


@pytest.mark.parametrize(
    ("answer", "state", "reason"),
    [
        (ok({"status": "error", "message": "Model not found: F5jvdzGnYi"}), GenerationState.FAILED, "Model not found"),
        (
            ok({"status": "error", "message": {"prompt": ["The prompt field is required."]}}, 400),
            GenerationState.FAILED,
            "prompt",
        ),
        (httpx.ReadTimeout("no answer"), GenerationState.UNCERTAIN, "not asked for again"),
    ],
)
async def test_refusals_fail_and_doubts_are_never_resent(
    world, store: SqliteStore, clock, answer, state, reason
) -> None:
    service, runner, provider, _ = world(text2img=answer)
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    assert await drive(runner, clock, generation.id) is state
    assert reason in (await require_generation(service.generations, generation.id)).last_error
    assert len(provider.calls("text2img")) == 1


async def test_a_generation_failing_while_processing_fails_with_the_reason(world, store: SqliteStore, clock) -> None:
    failed = {"status": "failed", "id": 77, "message": "GPU out of memory", "output": []}
    service, runner, _provider, _ = world(text2img=ok(processing()), fetch=ok(failed))
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    assert await drive(runner, clock, generation.id) is GenerationState.FAILED
    assert "GPU out of memory" in (await require_generation(service.generations, generation.id)).last_error


async def test_a_generation_past_the_deadline_is_given_up(world, store: SqliteStore, clock) -> None:
    service, runner, _provider, _ = world(text2img=ok(processing()), fetch=lambda _r: ok(processing()))
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    await drive(runner, clock, generation.id, steps=2)
    clock.advance(service.settings.imagine_deadline_seconds)
    assert await drive(runner, clock, generation.id, steps=1) is GenerationState.FAILED
    assert "stopped waiting" in (await require_generation(service.generations, generation.id)).last_error


async def test_at_most_the_cap_is_in_flight(world, store: SqliteStore, clock, make_settings) -> None:
    service, runner, provider, _ = world(text2img=lambda _r: ok(processing()))
    use_settings(service, make_settings(max_concurrent_generations=2, imagine_cooldown_seconds=0))
    runner.settings = service.settings
    job = await ready_model(store)
    for _ in range(3):
        await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    await drive(runner, clock, 1, steps=1)
    assert await service.generations.in_flight() == 2
    assert len(provider.calls("text2img")) == 2


async def test_a_runner_that_stops_leading_stops_its_work_and_the_next_leader_settles_it(
    world, store: SqliteStore, clock
) -> None:
    service, runner, provider, _ = world()
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    sending = asyncio.Event()
    cancelled: list[int] = []

    async def hang(queued: Generation) -> None:  # a text2img call that is still under way
        await service.record(queued.id, GenerationEvent("submit"))
        sending.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(queued.id)
            raise

    runner.submit = hang  # type: ignore[method-assign]
    running = asyncio.create_task(runner.run())
    await asyncio.wait_for(sending.wait(), 5)
    running.cancel()  # the leadership loop cancels the runner when the lead is lost
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await asyncio.sleep(0)
    assert cancelled == [generation.id]
    _, next_leader, _, _ = world()
    assert await next_leader.recover() == 1
    assert (await require_generation(service.generations, generation.id)).state is GenerationState.UNCERTAIN
    assert provider.calls("text2img") == []


async def test_after_a_crash_submitting_becomes_uncertain_and_processing_is_fetched_again(
    world, store: SqliteStore, clock
) -> None:
    service, runner, provider, _ = world(fetch=ok(success(count=1)))
    job = await ready_model(store)
    caught = await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    clock.advance(service.settings.imagine_cooldown_seconds)
    await service.record(caught.id, GenerationEvent("submit"))
    waiting = await service.imagine(OWNER_1, job, ImagineOptions("y"), HERE)
    await service.record(waiting.id, GenerationEvent("submit"))
    await service.record(waiting.id, GenerationEvent("processing", request_id="77", next_check_at=clock()))

    assert await runner.recover() == 1
    assert (await require_generation(service.generations, caught.id)).state is GenerationState.UNCERTAIN
    assert await runner.recover() == 0  # nothing left in `submitting`
    assert await drive(runner, clock, waiting.id) is GenerationState.READY
    assert provider.calls("text2img") == []


def test_plan_refuses_events_out_of_order() -> None:
    from bot.jobs.generation_model import Generation

    generation = Generation.__new__(Generation)
    for name, value in (("id", 1), ("state", GenerationState.READY), ("submitted_at", None), ("attempts", 0)):
        object.__setattr__(generation, name, value)
    for kind in ("submit", "requeue", "processing", "ready", "fail", "uncertain"):
        plan = plan_generation(generation, GenerationEvent(kind), datetime.now(UTC))  # type: ignore[arg-type]
        assert plan.new_state is None and plan.outbox == (), kind


async def test_forgetting_the_owner_deletes_generations_and_pictures(world, store: SqliteStore, clock) -> None:
    service, runner, _provider, _ = world(text2img=ok(success(count=2)))
    job = await ready_model(store)
    generation = await service.imagine(OWNER_1, job, ImagineOptions("x", count=2), HERE)
    await drive(runner, clock, generation.id)
    assert await service.pictures_per_model([job.id]) == {job.id: 2}
    await store.forget_user(1)
    assert await service.generations.get(generation.id) is None
    assert (await store.db.fetchone("SELECT COUNT(*) FROM generation_images"))[0] == 0


async def test_the_runner_waits_quietly_while_at_capacity(world, store: SqliteStore, make_settings) -> None:
    import asyncio

    service, runner, _provider, _ = world(text2img=lambda _r: ok(processing(eta=30)))
    use_settings(service, make_settings(max_concurrent_generations=1, imagine_cooldown_seconds=0))
    runner.settings = service.settings
    job = await ready_model(store)
    for _ in range(2):
        await service.imagine(OWNER_1, job, ImagineOptions("x"), HERE)
    passes = 0
    real = runner.run_once

    async def counting() -> int:
        nonlocal passes
        passes += 1
        return await real()

    runner.run_once = counting  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.6)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await service.generations.in_flight() == 1
    assert passes <= 3, f"{passes} passes in 0.6 s: the runner spins while the queue is full"
