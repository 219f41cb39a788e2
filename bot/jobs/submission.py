"""Start pressed: from a confirmed preview to a submitted training.

The order matters for crash safety: the job moves to `submitting` first, then the card with
the crops is posted (its attachment URLs are what the provider downloads), then the URLs are
stored, and only then is the provider called.
"""

from __future__ import annotations

from bot.errors import UserError
from bot.jobs.delivery_errors import CannotPost, DeliveryError, DmsClosed, MessageGone
from bot.jobs.limits import LimitReached, Requester
from bot.jobs.model import Job, Posted
from bot.jobs.ports import CardPoster, JobStore
from bot.jobs.service import JobService, QueueWait


class TrainingStarter:
    def __init__(self, store: JobStore, jobs: JobService, cards: CardPoster) -> None:
        self.store = store
        self.jobs = jobs
        self.cards = cards

    async def start(self, job_id: int, who: Requester, *, on_queue_wait: QueueWait | None = None) -> Job:
        """Submit a confirmed preview; returns the job as the provider left it (or raises UserError).

        The preview (crops, where the card goes) is read from the store, so the Start click may land
        on any process. `on_queue_wait(seconds)` is told each time the provider's queue is full and
        the submission waits before trying again (so the owner can be told why Start takes a while).
        """
        preview = await self.jobs.load_preview(job_id)
        if preview is None:
            raise UserError("This preview can no longer be started. Run /train again.")
        try:
            await self.jobs.check_can_train(who)
        except LimitReached:
            await self.jobs.expire_preview(job_id, "A training limit was reached before Start.")
            raise
        # Leaving `preview` deletes the stored crops (they are the member's photos): they are posted
        # from `preview`, read above.
        result = await self.jobs.begin_submission(job_id)
        if not result.changed:
            raise UserError("This preview can no longer be started. Run /train again.")
        job = result.after
        files = [(photo.filename, photo.data) for photo in preview.photos]
        posted = await self._post_card(job, files, channel_id=job.channel_id, in_dms=preview.card_in_dms)
        await self.store.set_card(job.id, posted.channel_id, posted.message_id)
        if len(posted.attachment_urls) != len(files):
            await self.jobs.record_failure(job.id, "Discord did not return the uploaded photos' links.")
            raise UserError("Discord didn't return the photos' links, so nothing was sent. Please try again.")
        job = await self.store.require_job(job.id)
        return await self.jobs.submit(job, posted.attachment_urls, on_queue_wait=on_queue_wait)

    async def _post_card(self, job: Job, files: list[tuple[str, bytes]], *, channel_id: int, in_dms: bool) -> Posted:
        """Post the job's card with the crops in the channel, or in the owner's DMs if it can't be."""
        if not in_dms:
            try:
                return await self.cards.post_card(job, files, channel_id=channel_id)
            except (CannotPost, MessageGone):
                pass
        try:
            return await self.cards.dm_card(job, files)
        except DeliveryError as error:
            await self.jobs.record_failure(job.id, "I could not post the job's card in the channel or in your DMs.")
            if isinstance(error, DmsClosed):
                raise UserError(
                    "I can't post in this channel and your DMs are closed, so I have nowhere to put the job's "
                    "card. Nothing was sent or charged."
                ) from error
            raise UserError("Discord didn't accept the job's card, so nothing was sent. Please try again.") from error
