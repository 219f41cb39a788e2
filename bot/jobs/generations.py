"""Pictures made with a trained LoRA (/imagine, Generate, Again, and the ready DM's samples).

A generation is a job too: its row is written (`queued`) before anything is sent, every change
goes through `GenerationService.record` (state, pictures and the result's outbox item in one
transaction), and a submission that may have reached the provider is never resent. The
`GenerationRunner` moves generations along: it submits queued ones while the provider's shared
queue has room, fetches processing ones when their ETA is up, and gives up at the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from bot.config import Settings
from bot.errors import UserError
from bot.jobs.generation_model import (
    Generation,
    GenerationChange,
    GenerationNotFound,
    GenerationPlan,
    GenerationState,
    NewGeneration,
    Picture,
    result_draft,
)
from bot.jobs.image_api import GenerationAnswer, GenerationRequest
from bot.jobs.limits import DAY, LimitReached, Requester, check_roles, exempt, when
from bot.jobs.model import Job
from bot.jobs.ports import GenerationStore, ImageProvider, JobStore
from bot.jobs.provider_errors import GenerationFailed, ProviderError, RateLimited, SubmissionUncertain
from bot.jobs.server_settings import ServerPolicy, ServerSettings
from bot.jobs.states import JobState

log = logging.getLogger(__name__)

#: The ETA the provider gives is followed, but never shorter or longer than this.
MIN_FETCH_WAIT, MAX_FETCH_WAIT = 2.0, 30.0
#: After a failed call (network, 5xx), look again this much later.
RETRY_AFTER_FAILED_CALL = timedelta(seconds=10)
#: Largest picture accepted from the provider.
MAX_PICTURE_BYTES = 20 * 1024 * 1024

EventKind = Literal["submit", "requeue", "processing", "recheck", "ready", "fail", "uncertain"]


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    kind: EventKind
    detail: str | None = None
    request_id: str | None = None
    next_check_at: datetime | None = None
    pictures: tuple[Picture, ...] = field(default=(), repr=False)


_ALLOWED_FROM: dict[EventKind, frozenset[GenerationState]] = {
    "submit": frozenset({GenerationState.QUEUED}),
    "requeue": frozenset({GenerationState.SUBMITTING}),
    "processing": frozenset({GenerationState.SUBMITTING, GenerationState.PROCESSING}),
    "recheck": frozenset({GenerationState.QUEUED, GenerationState.PROCESSING}),
    "ready": frozenset({GenerationState.SUBMITTING, GenerationState.PROCESSING}),
    "fail": frozenset({GenerationState.QUEUED, GenerationState.SUBMITTING, GenerationState.PROCESSING}),
    "uncertain": frozenset({GenerationState.SUBMITTING}),
}
_TARGETS: dict[EventKind, GenerationState | None] = {
    "submit": GenerationState.SUBMITTING,
    "requeue": GenerationState.QUEUED,
    "processing": GenerationState.PROCESSING,
    "recheck": None,
    "ready": GenerationState.READY,
    "fail": GenerationState.FAILED,
    "uncertain": GenerationState.UNCERTAIN,
}


def plan_generation(generation: Generation, event: GenerationEvent, now: datetime) -> GenerationPlan:
    """What `event` does to `generation`. Pure: the store calls it inside the write transaction."""
    if generation.state not in _ALLOWED_FROM[event.kind]:
        return GenerationPlan(None, f"{event.kind} not allowed from {generation.state.value}")
    target = _TARGETS[event.kind]
    updates: dict[str, Any] = {}
    if event.next_check_at is not None:
        updates["next_check_at"] = event.next_check_at
    if event.kind == "submit" and generation.submitted_at is None:
        updates["submitted_at"] = now
    if event.kind == "requeue":
        updates["attempts"] = generation.attempts + 1
    if event.request_id is not None:
        updates["request_id"] = event.request_id
    if event.detail and event.kind in ("fail", "uncertain"):
        updates["last_error"] = event.detail[:1000]
    terminal = target is not None and target.is_terminal
    return GenerationPlan(
        new_state=target if target is not generation.state else None,
        reason=event.kind,
        updates=updates,
        outbox=(result_draft(generation.id),) if terminal else (),
        pictures=event.pictures if event.kind == "ready" else (),
    )


@dataclass(frozen=True, slots=True)
class ImagineOptions:
    """What a member asked for (from /imagine, the Generate modal, or Again)."""

    prompt: str
    strength: float = 0.8
    count: int = 1
    negative_prompt: str | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the result goes: a channel (None: the owner's DMs), and whether it is age-restricted."""

    guild_id: int | None
    channel_id: int | None
    age_restricted: bool = False


def full_prompt(job: Job, user_prompt: str) -> str:
    """The model's trigger words first, so "on a beach at sunset" is enough."""
    trigger = str(job.params.get("instance_prompt", "")).strip()
    text = user_prompt.strip()
    if not trigger or trigger.lower() in text.lower():
        return text
    return f"{trigger}, {text}"


def sample_prompt(job: Job) -> str:
    """The prompt of the pictures sent with the ready DM, from the instance and class prompts."""
    instance = str(job.params.get("instance_prompt", "")).strip()
    klass = str(job.params.get("class_prompt", "")).strip()
    return ", ".join(part for part in (instance, klass, "portrait, natural light, detailed") if part)


class GenerationService:
    """Starts generations (checking ownership and limits), and owns their one state-change function."""

    def __init__(
        self,
        store: JobStore,
        generations: GenerationStore,
        provider: ImageProvider,
        settings: Settings,
        *,
        on_outbox: Callable[[], None] = lambda: None,
        on_queued: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        server_settings: ServerSettings | None = None,
    ) -> None:
        self.store = store
        self.generations = generations
        self.provider = provider
        self.settings = settings
        #: The settings in effect in each server (roles, limits, safety); without it, the environment's.
        self.server_settings = server_settings or ServerSettings.environment_only(settings)
        self._on_outbox = on_outbox
        self._on_queued = on_queued
        self._rng = rng or random.SystemRandom()

    # -- the one state-change function ------------------------------------------------------------

    async def record(self, generation_id: int, event: GenerationEvent) -> GenerationChange:
        now = self.generations.now()
        change = await self.generations.apply(generation_id, lambda g: plan_generation(g, event, now))
        if change.changed:
            log.info(
                "generation %s: %s -> %s (%s)",
                generation_id,
                change.before.state.value,
                change.after.state.value,
                event.kind,
            )
        if change.plan.outbox:
            self._on_outbox()
        return change

    # -- models a member may use -----------------------------------------------------------------------

    async def ready_models(self, owner_id: int, text: str = "", *, limit: int = 25) -> list[Job]:
        """The owner's ready models whose name or id contains `text`, newest first (autocomplete)."""
        return await self.store.search_owner_jobs(owner_id, text, limit=limit, ready=True)

    async def model_for(self, owner_id: int, reference: str | None) -> Job:
        """The owner's ready model named by `reference` (a job id, `#id`, its name or its training
        id), or their newest ready model. Anything else is refused before the provider is asked."""
        text = (reference or "").strip().lstrip("#")
        if not text:
            newest = await self.ready_models(owner_id, limit=1)
            if not newest:
                raise UserError("You have no ready model yet. Train one with /train first.")
            return newest[0]
        job = await self.store.get_job(int(text)) if text.isdigit() and len(text) < 19 else None
        if job is None:
            matches = [
                candidate
                for candidate in await self.ready_models(owner_id, text, limit=25)
                if text.lower() in (candidate.name.lower(), (candidate.training_id or "").lower())
            ]
            job = matches[0] if len(matches) == 1 else None
        if job is None or job.owner_id != owner_id or job.state is not JobState.MODEL_READY or not job.training_id:
            raise UserError(
                "That isn't one of your ready models. Pick one from the list (start typing), "
                "or see them all with /mymodels."
            )
        return job

    # -- starting ------------------------------------------------------------------------------------------

    async def imagine(self, who: Requester, job: Job, options: ImagineOptions, where: Destination) -> Generation:
        """Check the roles and limits, then write the generation (queued) for the runner to submit.

        The settings in effect are the server's where the pictures are asked for; in DMs, those of
        the server the model was trained in (so a DM is no way around a server's limits).
        """
        if job.owner_id != who.user_id or job.state is not JobState.MODEL_READY or not job.training_id:
            raise UserError("That isn't one of your ready models.")
        if not options.prompt.strip():
            raise UserError("Tell me what to draw: the prompt can't be empty.")
        policy = await self.server_settings.effective(where.guild_id if where.guild_id is not None else job.guild_id)
        check_roles(policy, who, use="generate")
        if not exempt(policy, who):
            await self.check_limits(who.user_id, options.count, policy)
        return await self._create(
            job, options, where, kind="imagine", safety_off=policy.safety_checker_off_in_nsfw_channels
        )

    async def again(self, who: Requester, generation_id: int) -> Generation:
        """The same settings as an earlier generation, with a new seed."""
        earlier = await self.generations.get(generation_id)
        if earlier is None or earlier.owner_id != who.user_id:
            raise UserError("Only the member who made these pictures can make more like them.")
        job = await self.store.get_job(earlier.job_id)
        if job is None or job.state is not JobState.MODEL_READY:
            raise UserError("That model is no longer available.")
        options = ImagineOptions(
            prompt=earlier.user_prompt,
            strength=earlier.strength,
            count=earlier.samples,
            negative_prompt=earlier.negative_prompt,
        )
        where = Destination(earlier.guild_id, earlier.channel_id, earlier.age_restricted)
        return await self.imagine(who, job, options, where)

    async def start_samples(self, job: Job) -> Generation | None:
        """The pictures for a ready model's DM (READY_SAMPLES of them), once per job."""
        count = self.settings.ready_samples
        if count <= 0 or job.state is not JobState.MODEL_READY or not job.training_id:
            return None
        existing = await self.generations.sample_set(job.id)
        if existing is not None:
            return existing
        options = ImagineOptions(prompt=sample_prompt(job), count=count)
        # In DMs, never age-restricted: the safety checker stays on.
        return await self._create(job, options, Destination(job.guild_id, None), kind="sample", safety_off=False)

    async def _create(
        self, job: Job, options: ImagineOptions, where: Destination, *, kind: str, safety_off: bool
    ) -> Generation:
        """`safety_off`: the server lets /imagine turn the safety checker off (in age-restricted channels only)."""
        sdxl = job.params.get("base_model", "sdxl") != "normal"
        side = 1024 if sdxl else 512
        safety = not (safety_off and where.age_restricted)
        assert job.training_id is not None
        generation = await self.generations.create(
            NewGeneration(
                job_id=job.id,
                owner_id=job.owner_id,
                guild_id=where.guild_id,
                channel_id=where.channel_id,
                kind=kind,
                user_prompt=options.prompt.strip(),
                prompt=full_prompt(job, options.prompt),
                negative_prompt=(options.negative_prompt or "").strip() or None,
                strength=min(1.0, max(0.1, options.strength)),
                samples=min(4, max(1, options.count)),
                # Random unless asked: also keeps two identical prompts from tripping the
                # provider's duplicate-request filter.
                seed=options.seed if options.seed is not None else self._rng.randrange(1, 2**32),
                width=side,
                height=side,
                base_model_id=self.settings.sdapi_base_model_sdxl if sdxl else self.settings.sdapi_base_model_sd15,
                lora_model=job.training_id,
                safety_checker=safety,
                age_restricted=where.age_restricted,
            )
        )
        log.info("generation %s: %d picture(s) with job %s queued", generation.id, generation.samples, job.id)
        self._on_queued()
        return generation

    async def check_limits(self, owner_id: int, count: int, policy: ServerPolicy) -> None:
        """The per-member cooldown and daily picture quota (0: none), with the same wording as the
        training limits."""
        now = self.generations.now()
        recent = await self.generations.recent_for_owner(owner_id, now - DAY)
        cooldown = timedelta(seconds=policy.imagine_cooldown_seconds)
        if cooldown and recent and recent[-1][0] + cooldown > now:
            retry_at = recent[-1][0] + cooldown
            message = f"You're making pictures a little fast; try again {when(retry_at)}."
            raise LimitReached(message, retry_at)
        quota = policy.max_pictures_per_user_per_day
        if quota:
            used = sum(pictures for _, pictures in recent)
            if used + count > quota:
                # The quota reopens once enough of the oldest pictures are a day old.
                freed, retry_at = 0, now + DAY
                for created, pictures in recent:
                    freed += pictures
                    if used - freed + count <= quota:
                        retry_at = created + DAY
                        break
                left = max(0, quota - used)
                raise LimitReached(
                    f"You have {left} of your {quota} pictures for today left; try again {when(retry_at)}.",
                    retry_at,
                )

    async def model_of(self, generation: Generation) -> Job | None:
        """The trained model a generation uses (None once it was deleted)."""
        return await self.store.get_job(generation.job_id)

    async def describe(self, generation_id: int) -> Generation | None:
        return await self.generations.get(generation_id)

    async def pictures_per_model(self, job_ids: Sequence[int]) -> dict[int, int]:
        return await self.generations.pictures_by_job(job_ids)


class GenerationRunner:
    """Moves generations along; run under the supervisor (one per process).

    `run` settles what a crash interrupted (a generation caught in `submitting` may have reached
    the provider: it becomes `uncertain`, never resent; one in `processing` is simply fetched
    again), then loops: submit queued generations while fewer than MAX_CONCURRENT_GENERATIONS
    are at the provider, fetch processing ones whose ETA is up, and fail any past the deadline.
    """

    def __init__(
        self,
        service: GenerationService,
        *,
        spawn: Callable[[str, Coroutine[Any, Any, None]], object] | None = None,
        idle_wait: float = 30.0,
    ) -> None:
        self.service = service
        self.generations = service.generations
        self.settings = service.settings
        self._wake = asyncio.Event()
        self._busy: set[int] = set()
        self._work: set[asyncio.Task[None]] = set()
        self._at_capacity = False
        #: The longest the runner sleeps with nothing due. Generations queued by another process
        #: (several share PostgreSQL) cannot wake this one, so there it is short.
        self.idle_wait = idle_wait
        self._spawn = spawn or (lambda name, coro: asyncio.create_task(coro, name=name))

    @property
    def provider(self) -> ImageProvider:
        return self.service.provider

    def wake(self) -> None:
        self._wake.set()

    async def recover(self) -> int:
        """Each time the runner starts: a generation left in `submitting` by a process that died (or
        by this runner before it lost the lead) may have reached the provider, so it becomes
        `uncertain`. This runner's own submissions still under way (after a crash of its loop) are
        left alone."""
        settled = 0
        for generation_id in await self.generations.ids_in_state(GenerationState.SUBMITTING):
            if generation_id in self._busy:
                continue
            detail = "The bot restarted while asking for these pictures; they were not asked for again."
            await self.service.record(generation_id, GenerationEvent("uncertain", detail=detail))
            settled += 1
        return settled

    async def run(self) -> None:
        try:
            await self.recover()
            while True:
                await self.run_once()
                await self._sleep()
        except asyncio.CancelledError:
            # Stopping, or this process lost the lead: its work in flight stops too, and whoever
            # leads next settles it (a submission that may have been sent is never sent again).
            for task in list(self._work):
                task.cancel()
            raise

    async def _sleep(self) -> None:
        # At capacity, queued generations wait for a finished one to wake the runner (not a
        # poll every few milliseconds); otherwise the next due generation decides.
        next_due = await self.generations.next_due(include_queued=not self._at_capacity)
        timeout = self.idle_wait
        if next_due is not None:
            timeout = max(0.05, min(timeout, (next_due - self.generations.now()).total_seconds()))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def run_once(self) -> int:
        """Start work on every due generation (in the background); returns how many were started."""
        started = 0
        self._at_capacity = False
        in_flight = await self.generations.in_flight()
        deadline = timedelta(seconds=self.settings.imagine_deadline_seconds)
        now = self.generations.now()
        for generation in await self.generations.due():
            if generation.id in self._busy:
                continue
            if now - generation.created_at >= deadline:
                await self._give_up(generation)
                continue
            if generation.state is GenerationState.QUEUED:
                if in_flight >= self.settings.max_concurrent_generations:
                    self._at_capacity = True
                    continue  # wait for a place; a finished generation wakes the runner
                in_flight += 1
                work: Coroutine[Any, Any, None] = self.submit(generation)
            else:
                work = self.check(generation)
            self._busy.add(generation.id)
            task = self._spawn(f"generation-{generation.id}", self._guarded(generation.id, work))
            if isinstance(task, asyncio.Task):  # kept to be stopped with the runner
                self._work.add(task)
                task.add_done_callback(self._work.discard)
            started += 1
        return started

    async def _guarded(self, generation_id: int, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except GenerationNotFound:
            log.info("generation %s: deleted while in progress (/forgetme)", generation_id)
        finally:
            self._busy.discard(generation_id)
            self.wake()

    async def _give_up(self, generation: Generation) -> None:
        minutes = max(1, round(self.settings.imagine_deadline_seconds / 60))
        if generation.state is GenerationState.QUEUED:
            detail = (
                f"The image service stayed too busy for {minutes} minute(s), so these pictures were not made "
                "and nothing was charged. Please try again later."
            )
        else:
            detail = f"The image service did not finish these pictures within {minutes} minute(s); I stopped waiting."
        await self.service.record(generation.id, GenerationEvent("fail", detail=detail))

    # -- one generation ------------------------------------------------------------------------------------

    async def submit(self, generation: Generation) -> None:
        change = await self.service.record(generation.id, GenerationEvent("submit"))
        if not change.changed:
            return
        request = GenerationRequest(
            base_model_id=generation.base_model_id,
            prompt=generation.prompt,
            negative_prompt=generation.negative_prompt,
            lora_model=generation.lora_model,
            lora_strength=generation.strength,
            width=generation.width,
            height=generation.height,
            samples=generation.samples,
            safety_checker=generation.safety_checker,
            seed=generation.seed,
            track_id=f"lorabot-generation-{generation.id}",
        )
        try:
            answer = await self.provider.text2img(request)
        except RateLimited as error:  # the queue is full: nothing was taken; try again later
            wait = max(1.0, error.retry_after if error.retry_after is not None else 30.0)
            log.info("generation %s: the provider's queue is full; again in %.0f s", generation.id, wait)
            retry_at = self.generations.now() + timedelta(seconds=wait)
            await self.service.record(generation.id, GenerationEvent("requeue", next_check_at=retry_at))
            return
        except SubmissionUncertain as error:
            detail = (
                "The image service did not confirm these pictures. They were not asked for again, so you are "
                "not charged twice; if they were made, I can't fetch them."
            )
            log.warning("generation %s: submission unconfirmed (%s)", generation.id, error)
            await self.service.record(generation.id, GenerationEvent("uncertain", detail=detail))
            return
        except ProviderError as error:
            log.warning("generation %s: refused: %s", generation.id, error)
            await self.service.record(generation.id, GenerationEvent("fail", detail=error.user_message))
            return
        await self._follow(generation, answer)

    async def check(self, generation: Generation) -> None:
        assert generation.request_id is not None
        try:
            answer = await self.provider.fetch_generation(generation.request_id)
        except GenerationFailed as error:
            await self.service.record(generation.id, GenerationEvent("fail", detail=error.user_message))
            return
        except ProviderError as error:
            log.warning("generation %s: fetch failed (%s); will ask again", generation.id, type(error).__name__)
            retry_at = self.generations.now() + RETRY_AFTER_FAILED_CALL
            await self.service.record(generation.id, GenerationEvent("recheck", next_check_at=retry_at))
            return
        await self._follow(generation, answer)

    async def _follow(self, generation: Generation, answer: GenerationAnswer) -> None:
        """Record a text2img or fetch answer: still processing, or done (download the pictures now)."""
        if answer.status == "processing" or not answer.image_urls:
            if answer.request_id is None and generation.request_id is None:
                detail = "The image service accepted the request but gave no id to fetch the pictures with."
                await self.service.record(generation.id, GenerationEvent("fail", detail=detail))
                return
            wait = min(MAX_FETCH_WAIT, max(MIN_FETCH_WAIT, answer.eta_seconds or MIN_FETCH_WAIT))
            event = GenerationEvent(
                "processing",
                request_id=answer.request_id or generation.request_id,
                next_check_at=self.generations.now() + timedelta(seconds=wait),
            )
            await self.service.record(generation.id, event)
            return
        pictures = await self._download(generation, answer)
        if pictures is None:
            return
        ready = GenerationEvent("ready", request_id=answer.request_id, pictures=pictures)
        await self.service.record(generation.id, ready)

    async def _download(self, generation: Generation, answer: GenerationAnswer) -> tuple[Picture, ...] | None:
        """The pictures at once: the provider's links are temporary."""
        flags = list(answer.nsfw) + [False] * len(answer.image_urls)
        try:
            fetched = await asyncio.gather(
                *(self.provider.download_image(url, max_bytes=MAX_PICTURE_BYTES) for url in answer.image_urls)
            )
        except ProviderError as error:
            request_id = answer.request_id or generation.request_id
            if getattr(error, "retryable", False) and request_id:
                # A passing fault: fetch again shortly (the answer repeats the links) and retry.
                log.warning("generation %s: download failed (%s); will try again", generation.id, error)
                retry_at = self.generations.now() + RETRY_AFTER_FAILED_CALL
                event = GenerationEvent("processing", request_id=request_id, next_check_at=retry_at)
                await self.service.record(generation.id, event)
                return None
            log.warning("generation %s: pictures could not be downloaded (%s)", generation.id, error)
            detail = "The pictures were made, but could not be downloaded from the image service before they expired."
            await self.service.record(generation.id, GenerationEvent("fail", detail=detail))
            return None
        return tuple(
            Picture(data=data, content_type=content_type, nsfw=bool(flags[index]))
            for index, (data, content_type) in enumerate(fetched)
        )
