"""The job service: the one function that changes a job's state, and the submission flow.

Every change, whatever its source (webhook, poll, user, system), goes through `JobService.record`,
which hands the event to the store to apply with its outbox items in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.config import Settings
from bot.errors import UserError
from bot.jobs import limits
from bot.jobs.model import CANCELLED_BY_OWNER, Job, Preview, PreviewPhoto, TransitionResult
from bot.jobs.ports import JobStore, Metrics, NoMetrics, TrainingProvider
from bot.jobs.provider_errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.jobs.server_settings import ServerSettings
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.training_api import DUPLICATE_WINDOW_SECONDS, TrainingRequest
from bot.jobs.transitions import plan_transition

log = logging.getLogger(__name__)

#: Beyond the queue-full retries, the most a live submission spends in calls: the model listing,
#: the card upload and the provider call, each with its own timeout (a generous bound).
SUBMISSION_CALL_ALLOWANCE_SECONDS = 600

#: What the user picks in /train, and what the provider expects for it.
TRAINING_TYPES = ("man", "woman", "couple", "object")
#: The provider's two spellings of "woman": its LoRA page says `female`, its schema `women`.
WOMAN_SPELLINGS = ("female", "women")
#: Where the spelling the provider last accepted is remembered.
WOMAN_SPELLING_KEY = "provider.training_type_woman"
_NAMES_TRAINING_TYPE = re.compile(r"training[\s_-]*type")

#: Called while a submission waits for the provider's full queue, with the wait in seconds.
QueueWait = Callable[[float], Awaitable[None]]


def provider_training_type(choice: str, settings: Settings, woman: str | None = None) -> str:
    """The provider's word for a /train subject; `woman` is the spelling to use when not forced."""
    return {
        "man": "men",
        "woman": settings.sdapi_training_type_woman or woman or WOMAN_SPELLINGS[0],
        "couple": "couple",
        "object": "null",
    }[choice]


def refuses_training_type(error: ProviderError) -> bool:
    """A validation error that names `training_type` (a definite refusal: nothing was accepted)."""
    if not isinstance(error, RequestRejected) or isinstance(error, TrainingNotFound):
        return False
    return bool(_NAMES_TRAINING_TYPE.search((error.provider_message or "").lower()))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    if not stored_hash:
        return False
    return hmac.compare_digest(hash_secret(secret), stored_hash)


@dataclass(frozen=True, slots=True)
class TrainingParams:
    """What the owner asked for in /train; stored as the job's `params` (never the API key)."""

    instance_prompt: str
    class_prompt: str
    base_model: str = "sdxl"
    training_type: str = "man"
    lora_type: str = "lora"
    negative_prompt: str | None = None
    max_train_steps: int | None = None
    seed: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "instance_prompt": self.instance_prompt,
            "class_prompt": self.class_prompt,
            "base_model": self.base_model,
            "training_type": self.training_type,
            "lora_type": self.lora_type,
            "negative_prompt": self.negative_prompt,
            "max_train_steps": self.max_train_steps,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrainingParams:
        return cls(**data)  # type: ignore[arg-type]

    def steps_for(self, image_count: int) -> int:
        """The provider page's rule: 2 x the number of images, at most 2000."""
        return min(self.max_train_steps or 2 * image_count, 2000)


class JobService:
    def __init__(
        self,
        store: JobStore,
        provider: TrainingProvider,
        settings: Settings,
        *,
        on_outbox: Callable[[], None] = lambda: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
        server_settings: ServerSettings | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        #: The settings in effect in each server (limits, roles); without it, the environment's.
        self.server_settings = server_settings or ServerSettings.environment_only(settings)
        self.metrics: Metrics = metrics if metrics is not None else NoMetrics()
        self._on_outbox = on_outbox
        self._sleep = sleep
        self._forget_listeners: list[Callable[[int], None]] = []

    # -- the one state-change function --------------------------------------------------------

    async def record(self, job_id: int, event: Event, *, payload: str | None = None) -> TransitionResult:
        """Apply `event` to the job through the state machine (state, event row, outbox: one transaction)."""
        result = await self.store.apply_event(job_id, event, plan_transition, payload=payload)
        plan = result.plan
        log.info(
            "job %s: %s %s from %s -> %s (%s)",
            job_id,
            event.source.value,
            plan.recorded_status,
            result.before.state.value,
            result.after.state.value,
            plan.reason,
        )
        if result.changed:
            self.metrics.state_changed(event.source.value, result.after.state.value)
        if plan.outbox:
            self._on_outbox()
        return result

    # -- the /train flow ----------------------------------------------------------------------

    async def create_preview(
        self,
        *,
        owner_id: int,
        guild_id: int | None,
        channel_id: int,
        name: str,
        params: TrainingParams,
        photos: Sequence[PreviewPhoto],
        card_in_dms: bool,
        expires_at: datetime,
    ) -> Job:
        """A job in `preview`, with its crops stored so that a Start on any process can submit it."""
        job = await self.store.create_job(
            owner_id=owner_id,
            guild_id=guild_id,
            channel_id=channel_id,
            name=name,
            params=params.as_dict(),
            image_count=len(photos),
        )
        await self.store.save_preview(job.id, photos, card_in_dms=card_in_dms, expires_at=expires_at)
        return job

    async def load_preview(self, job_id: int) -> Preview | None:
        """A preview's crops and choices, or None once it was started, dismissed, expired or erased."""
        return await self.store.load_preview(job_id)

    async def get_job(self, job_id: int) -> Job | None:
        """The job (e.g. behind a preview's buttons), or None once it was deleted."""
        return await self.store.get_job(job_id)

    async def check_can_train(self, who: limits.Requester) -> None:
        """Raise LimitReached when `who` may not start a training now (roles, running jobs, quotas),
        under the settings in effect in the server they asked from."""
        policy = await self.server_settings.effective(who.guild_id)
        await limits.check_can_train(self.store, policy, who)

    async def expire_preview(self, job_id: int, reason: str) -> TransitionResult:
        return await self.record(job_id, Event(Action.EXPIRE, EventSource.USER, detail=reason))

    async def begin_submission(self, job_id: int) -> TransitionResult:
        """Start pressed: the job moves to `submitting` before anything leaves the process."""
        return await self.record(job_id, Event(Action.SUBMIT, EventSource.USER))

    async def record_failure(self, job_id: int, detail: str) -> TransitionResult:
        return await self.record(job_id, Event(Action.FAIL, EventSource.SYSTEM, detail=detail))

    async def submit(self, job: Job, image_urls: Sequence[str], *, on_queue_wait: QueueWait | None = None) -> Job:
        """Send the training to the provider and record the outcome. Never resent blindly.

        Resent only after a definite refusal: the provider's queue is full (after the wait it
        asks for, up to SDAPI_QUEUE_RETRY_SECONDS in all), or a validation error naming
        `training_type` for a woman (once, with the other spelling). Each attempt carries a new
        webhook secret, so no two attempts are identical requests to the duplicate filter. In
        polling mode (no webhook) two attempts are identical, so they are at least the filter's
        window apart.
        """
        params = TrainingParams.from_dict(dict(job.params))
        await self._take_baseline_listing(job.id)
        woman = params.training_type == "woman"
        spelling = await self._woman_spelling() if woman else None
        switched = False
        waited = 0.0
        while True:
            secret = secrets.token_urlsafe(32)
            await self.store.prepare_submission(job.id, image_urls=image_urls, secret_hash=hash_secret(secret))
            request = self._training_request(job.id, params, image_urls, secret, spelling)
            try:
                accepted = await self.provider.submit_training(request)
            except SubmissionUncertain as error:
                log.warning("job %s: submission unconfirmed (%s); it will not be resubmitted", job.id, error)
                result = await self.record(
                    job.id, Event(Action.UNCERTAIN, EventSource.SYSTEM, detail=error.user_message)
                )
                return result.after
            except RateLimited as error:  # the client raises this only for a definite refusal
                wait = max(1.0, error.retry_after if error.retry_after is not None else 30.0)
                if self.settings.webhook_base is None:  # webhook null: the same body as the last attempt
                    wait = max(wait, DUPLICATE_WINDOW_SECONDS + 1.0)
                if waited + wait > self.settings.sdapi_queue_retry_seconds:
                    log.warning("job %s: the provider's queue stayed full for %.0f s; giving up", job.id, waited)
                    minutes = max(1, round((waited + wait) / 60))
                    detail = (
                        f"The image service's queue stayed full for about {minutes} minute(s), so the training "
                        "was not started and nothing was charged. Please try again later."
                    )
                    return (await self.record_failure(job.id, detail)).after
                log.info("job %s: the provider's queue is full; submitting again in %.0f s", job.id, wait)
                if on_queue_wait is not None:
                    await on_queue_wait(wait)
                await self._sleep(wait)
                waited += wait
                continue
            except ProviderError as error:
                if woman and spelling and not switched and refuses_training_type(error) and self._spelling_unforced:
                    other = WOMAN_SPELLINGS[1 - WOMAN_SPELLINGS.index(spelling)]
                    log.info("job %s: the provider refused training_type %r; trying %r", job.id, spelling, other)
                    spelling, switched = other, True
                    continue
                return await self._refused(job.id, error)
            break
        if woman and spelling and self._spelling_unforced and switched:
            await self.store.set_value(WOMAN_SPELLING_KEY, spelling)
            log.info("remembering the provider's spelling of woman: %r", spelling)
        result = await self.record(
            job.id,
            Event(
                Action.ACCEPTED,
                EventSource.SYSTEM,
                status=accepted.status or JobState.DEPLOYING_GPU.value,
                training_id=accepted.training_id,
            ),
            payload=json.dumps({k: v for k, v in accepted.raw.items() if k != "key"}, default=str)[:4000],
        )
        if accepted.eta_text:
            await self.store.touch(job.id, eta_text=accepted.eta_text)
        return result.after

    def _training_request(
        self, job_id: int, params: TrainingParams, image_urls: Sequence[str], secret: str, woman: str | None
    ) -> TrainingRequest:
        return TrainingRequest(
            instance_prompt=params.instance_prompt,
            class_prompt=params.class_prompt,
            images=tuple(image_urls),
            base_model_type="normal" if params.base_model == "normal" else "sdxl",
            seed=params.seed,
            training_type=provider_training_type(params.training_type, self.settings, woman),
            lora_type="lycoris" if params.lora_type == "lycoris" else "lora",
            max_train_steps=params.steps_for(len(image_urls)),
            # Polling mode: `webhook: null`, and the reconciler polls the job.
            webhook=f"{base}/{job_id}/{secret}" if (base := self.settings.webhook_base) else None,
            **({"negative_prompt": params.negative_prompt} if params.negative_prompt else {}),
        )

    async def _refused(self, job_id: int, error: ProviderError) -> Job:
        if isinstance(error, InvalidApiKey | InsufficientCredits):
            log.error("job %s: the provider refused the account: %s (operator action needed)", job_id, error)
        else:
            log.warning("job %s: submission rejected: %s", job_id, error)
        result = await self.record(job_id, Event(Action.FAIL, EventSource.SYSTEM, detail=error.user_message))
        return result.after

    @property
    def _spelling_unforced(self) -> bool:
        return self.settings.sdapi_training_type_woman is None

    async def _woman_spelling(self) -> str:
        """The spelling to send: forced by the settings, else the one the provider last accepted."""
        remembered = await self.store.get_value(WOMAN_SPELLING_KEY)
        return remembered if remembered in WOMAN_SPELLINGS else WOMAN_SPELLINGS[0]

    async def _take_baseline_listing(self, job_id: int) -> None:
        """List the account's models just before submitting, so an unconfirmed submission can be
        matched later with a model that appeared after it. Best effort: a failure only means that
        this job, if unconfirmed, waits for a webhook instead."""
        try:
            async with asyncio.timeout(self.settings.sdapi_timeout_seconds):
                models = await self.provider.list_trainings()
        except (ProviderError, TimeoutError) as error:
            log.warning("job %s: could not list the provider's models before submitting (%s)", job_id, error)
            return
        await self.store.record_listing(models, baseline_for=job_id)

    async def cancel(self, job: Job, *, by_user_id: int, by: str | None = None) -> Job:
        """Stop a job: ask the provider to cancel, then record `cancelled` ourselves.

        The provider may report a stopped run as finished, so our own record is what counts.
        If the provider cannot be reached the job is left alone and the error is raised, so the
        user never believes a training was stopped while it is still running (and billed).
        `by` says who cancelled when it was not the owner (a server manager): the card and the
        owner's DM say so.
        """
        if job.state.is_terminal:
            raise UserError(f"Job #{job.id} has already finished ({job.state.label.lower()}) and can't be cancelled.")
        if job.training_id:
            try:
                await self.provider.cancel_training(job.training_id)
            except TrainingNotFound:
                log.warning("job %s: provider does not know training %s; cancelling locally", job.id, job.training_id)
            except RequestRejected as error:
                # e.g. "Training has already finished.": record the cancel anyway; no more charges accrue.
                log.info("job %s: provider answered the cancel with: %s", job.id, error.provider_message)
        detail = CANCELLED_BY_OWNER if by_user_id == job.owner_id else f"Cancelled by {by or f'<@{by_user_id}>'}."
        result = await self.record(job.id, Event(Action.CANCEL, EventSource.USER, detail=detail))
        if not result.changed:
            raise UserError(f"Job #{job.id} has already finished and can't be cancelled.")
        return result.after

    async def forget_user(self, user_id: int) -> int:
        """Delete everything stored about a user: their running trainings are cancelled and their
        trained models deleted from the provider account first, then the bot's records.

        If the provider can't be reached, nothing is deleted locally, so the ids are kept and the
        user can simply try again.
        """
        jobs = await self.store.jobs_for_owner(user_id, limit=1000)
        for job in jobs:
            if not job.state.is_terminal and job.state is not JobState.PREVIEW:
                try:
                    await self.cancel(job, by_user_id=user_id)
                except (ProviderError, UserError) as error:
                    log.warning("job %s: could not cancel before deleting (%s)", job.id, type(error).__name__)
                    raise UserError(
                        f"I couldn't cancel your running training #{job.id} with the provider, so nothing was "
                        "deleted yet. Please try again in a few minutes."
                    ) from error
        for job in jobs:
            if job.training_id:
                await self._delete_model(job)
        deleted = await self.store.forget_user(user_id)
        for listener in self._forget_listeners:
            listener(user_id)
        return deleted

    async def _delete_model(self, job: Job) -> None:
        """Delete a job's trained model (or what is left of a cancelled run) from the provider."""
        assert job.training_id is not None
        try:
            await self.provider.delete_training(job.training_id)
        except TrainingNotFound:
            log.info("job %s: the provider has no model %s to delete", job.id, job.training_id)
        except RequestRejected as error:
            # A refusal to delete (not a failure to reach the provider) won't change on retry.
            log.warning("job %s: the provider refused to delete model %s: %s", job.id, job.training_id, error)
        except ProviderError as error:
            log.warning("job %s: could not delete model %s (%s)", job.id, job.training_id, type(error).__name__)
            raise UserError(
                f"I couldn't delete the model of your training #{job.id} from the provider, so nothing was "
                "deleted yet. Please try again in a few minutes."
            ) from error
        else:
            log.info("job %s: deleted model %s from the provider account", job.id, job.training_id)

    def add_forget_listener(self, callback: Callable[[int], None]) -> None:
        """Call `callback(user_id)` after a user's data was deleted (e.g. to drop what is held in memory)."""
        self._forget_listeners.append(callback)

    async def recover_interrupted(self) -> int:
        """At start-up of the only process (SQLite): settle every job caught between Start and the
        provider's answer by a crash. With several processes the reconciler does it instead, job by
        job, once a submission has run for longer than any live one can (`settle_interrupted`)."""
        settled = 0
        for job_id in await self.store.job_ids_in_states([JobState.SUBMITTING]):
            job = await self.store.require_job(job_id)
            if await self.settle_interrupted(job):
                settled += 1
        return settled

    async def settle_interrupted(self, job: Job) -> bool:
        """Settle a `submitting` job whose submission was interrupted; False if it needs nothing.

        One whose image URLs were never stored never reached the provider: it fails plainly
        (nothing was charged). One whose URLs were stored may have reached it: it becomes
        `uncertain`, is never resubmitted, and a late webhook or the model list can still adopt it.
        """
        if job.state is not JobState.SUBMITTING or job.training_id:
            return False
        if job.image_urls:
            event = Event(
                Action.UNCERTAIN,
                EventSource.SYSTEM,
                detail="The bot restarted while submitting; the training may or may not have started.",
            )
        else:
            event = Event(
                Action.FAIL,
                EventSource.SYSTEM,
                detail="The bot restarted before submitting; nothing was sent or charged. Run /train again.",
            )
        return (await self.record(job.id, event)).changed

    def submission_grace(self) -> timedelta:
        """How long a live submission can take at most: the queue-full retries plus the calls' own time."""
        return timedelta(seconds=self.settings.sdapi_queue_retry_seconds + SUBMISSION_CALL_ALLOWANCE_SECONDS)

    async def expire_stale_previews(self) -> int:
        """Previews past their timeout become `expired` (their crops are deleted with them)."""
        cutoff = self.store.now() - timedelta(seconds=self.settings.preview_timeout_seconds)
        expired = 0
        for job_id in await self.store.job_ids_in_states([JobState.PREVIEW]):
            job = await self.store.require_job(job_id)
            if job.created_at <= cutoff:
                await self.expire_preview(job_id, "The preview timed out.")
                expired += 1
        return expired
