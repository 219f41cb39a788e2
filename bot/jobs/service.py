"""The job service: the one function that changes a job's state, and the submission flow.

Every change, whatever its source (webhook, poll, user, system), goes through `JobService.record`,
which hands the event to the store to apply with its outbox items in one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot.config import Settings
from bot.errors import UserError
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.provider.client import ProviderClient
from bot.provider.errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.provider.models import TrainingRequest
from bot.store import Job, Store, TransitionResult

log = logging.getLogger(__name__)

#: What the user picks in /train, and what the provider expects for it.
TRAINING_TYPES = ("man", "woman", "couple", "object")


def provider_training_type(choice: str, settings: Settings) -> str:
    return {
        "man": "men",
        "woman": settings.sdapi_training_type_woman,
        "couple": "couple",
        "object": "null",
    }[choice]


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
        store: Store,
        provider: ProviderClient,
        settings: Settings,
        *,
        on_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self._on_outbox = on_outbox

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
        if plan.outbox:
            self._on_outbox()
        return result

    # -- the /train flow ----------------------------------------------------------------------

    async def create_preview(
        self, *, owner_id: int, guild_id: int | None, channel_id: int, name: str, params: TrainingParams, images: int
    ) -> Job:
        return await self.store.create_job(
            owner_id=owner_id,
            guild_id=guild_id,
            channel_id=channel_id,
            name=name,
            params=params.as_dict(),
            image_count=images,
        )

    async def expire_preview(self, job_id: int, reason: str) -> TransitionResult:
        return await self.record(job_id, Event(Action.EXPIRE, EventSource.USER, detail=reason))

    async def begin_submission(self, job_id: int) -> TransitionResult:
        """Start pressed: the job moves to `submitting` before anything leaves the process."""
        return await self.record(job_id, Event(Action.SUBMIT, EventSource.USER))

    async def record_failure(self, job_id: int, detail: str) -> TransitionResult:
        return await self.record(job_id, Event(Action.FAIL, EventSource.SYSTEM, detail=detail))

    async def submit(self, job: Job, image_urls: Sequence[str]) -> Job:
        """Send the training to the provider and record the outcome. Never retried blindly."""
        secret = secrets.token_urlsafe(32)
        await self.store.prepare_submission(job.id, image_urls=image_urls, secret_hash=hash_secret(secret))
        params = TrainingParams.from_dict(dict(job.params))
        request = TrainingRequest(
            instance_prompt=params.instance_prompt,
            class_prompt=params.class_prompt,
            images=tuple(image_urls),
            base_model_type="normal" if params.base_model == "normal" else "sdxl",
            seed=params.seed,
            training_type=provider_training_type(params.training_type, self.settings),
            lora_type="lycoris" if params.lora_type == "lycoris" else "lora",
            max_train_steps=params.steps_for(len(image_urls)),
            webhook=f"{self.settings.webhook_base}/{job.id}/{secret}",
            **({"negative_prompt": params.negative_prompt} if params.negative_prompt else {}),
        )
        try:
            accepted = await self.provider.submit_training(request)
        except SubmissionUncertain as error:
            log.warning("job %s: submission unconfirmed (%s); it will not be resubmitted", job.id, type(error).__name__)
            result = await self.record(
                job.id,
                Event(Action.UNCERTAIN, EventSource.SYSTEM, detail=error.user_message),
            )
            return result.after
        except ProviderError as error:
            if isinstance(error, InvalidApiKey | InsufficientCredits):
                log.error("job %s: the provider refused the account: %s (operator action needed)", job.id, error)
            elif isinstance(error, RateLimited):
                log.warning("job %s: provider rate limit, retry after %s s", job.id, error.retry_after)
            else:
                log.warning("job %s: submission rejected: %s", job.id, error)
            result = await self.record(job.id, Event(Action.FAIL, EventSource.SYSTEM, detail=error.user_message))
            return result.after
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

    async def cancel(self, job: Job, *, by_user_id: int) -> Job:
        """Stop a job: ask the provider to cancel, then record `cancelled` ourselves.

        The provider may report a stopped run as finished, so our own record is what counts.
        If the provider cannot be reached the job is left alone and the error is raised, so the
        user never believes a training was stopped while it is still running (and billed).
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
        who = "its owner" if by_user_id == job.owner_id else f"<@{by_user_id}>"
        result = await self.record(job.id, Event(Action.CANCEL, EventSource.USER, detail=f"Cancelled by {who}."))
        if not result.changed:
            raise UserError(f"Job #{job.id} has already finished and can't be cancelled.")
        return result.after

    async def forget_user(self, user_id: int) -> int:
        """Delete everything stored about a user, cancelling their running trainings first."""
        for job in await self.store.jobs_for_owner(user_id, limit=1000):
            if not job.state.is_terminal and job.state is not JobState.PREVIEW:
                try:
                    await self.cancel(job, by_user_id=user_id)
                except (ProviderError, UserError) as error:
                    log.warning("job %s: could not cancel before deleting (%s)", job.id, type(error).__name__)
                    raise UserError(
                        f"I couldn't cancel your running training #{job.id} with the provider, so nothing was "
                        "deleted yet. Please try again in a few minutes."
                    ) from error
        return await self.store.forget_user(user_id)

    async def recover_interrupted(self) -> int:
        """After a crash: settle jobs caught between Start and the provider's answer.

        A `submitting` job whose image URLs were never stored never reached the provider: it
        fails plainly (nothing was charged). One whose URLs were stored may have reached it: it
        becomes `uncertain`, is never resubmitted, and a late webhook can still adopt it.
        """
        settled = 0
        for job_id in await self.store.job_ids_in_states([JobState.SUBMITTING]):
            job = await self.store.require_job(job_id)
            if job.training_id:
                continue
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
            await self.record(job_id, event)
            settled += 1
        return settled

    async def expire_stale_previews(self, *, all_previews: bool = False) -> int:
        """Previews past their timeout become `expired`; at start-up all of them do.

        A preview's crops live only in the memory of the process that showed it, so after a
        restart no preview can be started any more.
        """
        cutoff = self.store.now() - timedelta(seconds=self.settings.preview_timeout_seconds)
        reason = "The bot restarted; run /train again." if all_previews else "The preview timed out."
        expired = 0
        for job_id in await self.store.job_ids_in_states([JobState.PREVIEW]):
            job = await self.store.require_job(job_id)
            if all_previews or job.created_at <= cutoff:
                await self.expire_preview(job_id, reason)
                expired += 1
        return expired
