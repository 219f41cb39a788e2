"""Posts generations' results on Discord (for the notifier): the pictures as attachments, since
the provider's links are temporary, or why there are none; and the ready DM's sample pictures.

Delivery is at least once and posts once: each result carries a nonce derived from its outbox
key, and once posted, a generation's pictures keep only their Discord links.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import discord

from bot.delivery.messenger import UPLOAD_LIMIT_BYTES, Messenger
from bot.images import fit_for_upload
from bot.jobs.delivery_errors import CannotPost, DmsClosed, MessageGone, TooLarge
from bot.jobs.generation_model import Generation, GenerationState, result_draft
from bot.jobs.generations import GenerationService
from bot.jobs.model import Job, OutboxItem, Posted
from bot.jobs.ports import GenerationStore, JobStore
from bot.jobs.states import JobState
from bot.render import again_view, generation_message, result_files

log = logging.getLogger(__name__)

#: How often a ready DM waiting for its sample pictures looks again.
SAMPLE_POLL = timedelta(seconds=2)
#: What a result's pictures may weigh in all: Discord's upload limit, less room for the form.
UPLOAD_BUDGET = UPLOAD_LIMIT_BYTES - 512 * 1024


async def fit_pictures(files: list[tuple[str, bytes]], budget: int) -> list[tuple[str, bytes]] | None:
    """The pictures re-encoded (off the event loop) to weigh at most `budget`; None if they can't."""
    if sum(len(data) for _, data in files) <= budget:
        return files
    try:
        return await asyncio.to_thread(fit_for_upload, files, budget)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ReadyDmPictures:
    """What the ready DM carries: the sample pictures (if they are done), or a wait."""

    files: list[tuple[str, bytes]]
    positions: list[int]
    withheld: int
    samples: Generation | None
    wait_until: datetime | None = None


class PictureDelivery:
    def __init__(self, store: JobStore, service: GenerationService, messenger: Messenger) -> None:
        self.store = store
        self.service = service
        self.generations: GenerationStore = service.generations
        self.messenger = messenger

    async def deliver(self, item: OutboxItem, job: Job) -> bool:
        """Post one generation's result; returns whether it was posted now."""
        generation = await self.generations.get(int(item.payload.get("generation", 0)))
        if generation is None:  # deleted (/forgetme) since
            await self.store.mark_delivered(item)
            return False
        if generation.kind == "sample" and generation.reply_to_message_id is None:
            ready_dm = await self.store.outbox_delivered(f"dm:{job.id}:{JobState.MODEL_READY.value}")
            if ready_dm is False:  # the ready DM is still to go: it carries these pictures
                await self.store.postpone(item, self.generations.now() + SAMPLE_POLL)
                return False
        pictures = await self.generations.pictures(generation.id)
        files, positions, withheld = result_files(generation, pictures)
        text = generation_message(generation, job, len(files), withheld)
        succeeded = generation.state is GenerationState.READY and generation.kind == "imagine"
        view = again_view(generation.id) if succeeded else None
        posted, positions = await self._post_fitting(generation, job, item.dedupe_key, text, files, positions, view)
        await self._posted(generation, positions, posted)
        await self.store.mark_delivered(item)
        return True

    async def _post_fitting(
        self,
        generation: Generation,
        job: Job,
        key: str,
        text: str,
        files: list[tuple[str, bytes]],
        positions: list[int],
        view: discord.ui.View | None,
    ) -> tuple[Posted, list[int]]:
        """Post within Discord's upload limit: re-encode to fit, smaller again if Discord still
        refuses, and as a last resort post the text saying the pictures were too large."""
        for budget in (UPLOAD_BUDGET, UPLOAD_BUDGET // 2):
            fitted = await fit_pictures(files, budget)
            if fitted is None:
                continue
            try:
                return await self._post(generation, job, key, text, fitted, view), positions
            except TooLarge:
                log.warning("generation %s: Discord refused %d bytes of pictures", generation.id, budget)
        note = "\n(The pictures were too large to post on Discord.)"
        return await self._post(generation, job, key, text + note, [], view), []

    async def _post(
        self,
        generation: Generation,
        job: Job,
        key: str,
        text: str,
        files: list[tuple[str, bytes]],
        view: discord.ui.View | None,
    ) -> Posted:
        """Where the member asked (a channel, or their DMs); their DMs if the channel refuses; the
        channel the job came from if their DMs are closed."""
        owner = generation.owner_id
        reply_to = generation.reply_to_message_id
        if generation.channel_id is not None:
            try:
                return await self.messenger.post(
                    generation.channel_id,
                    content=text,
                    files=files,
                    view=view,
                    mention_user=owner,
                    nonce_key=key,
                )
            except (CannotPost, MessageGone) as error:
                log.info("generation %s: cannot post in its channel (%s); sending to DMs", generation.id, error)
                reply_to = None
        try:
            return await self.messenger.dm(
                owner, content=text, files=files, view=view, nonce_key=f"{key}:dm", reply_to=reply_to
            )
        except DmsClosed:
            return await self.messenger.post(
                job.channel_id, content=text, files=files, view=view, mention_user=owner, nonce_key=f"{key}:channel"
            )

    async def _posted(self, generation: Generation, positions: list[int], posted: Posted) -> None:
        urls: list[str | None] = [None] * generation.samples
        for position, url in zip(positions, posted.attachment_urls, strict=False):
            if position < len(urls):
                urls[position] = url
        await self.generations.pictures_posted(generation.id, urls)

    # -- the ready DM's samples -------------------------------------------------------------------------

    async def for_ready_dm(self, job: Job, deadline: timedelta) -> ReadyDmPictures:
        """The sample pictures to send with a model's ready DM, or how long the DM should wait.

        The DM waits for them at most `deadline` from the moment the model was ready; after that
        it goes without them, and they follow as a reply to it.
        """
        samples = await self.service.start_samples(job)
        if samples is None:
            return ReadyDmPictures([], [], 0, None)
        if samples.state is GenerationState.READY:
            files, positions, withheld = result_files(samples, await self.generations.pictures(samples.id))
            fitted = await fit_pictures(files, UPLOAD_BUDGET)
            if fitted is None:  # can't ride with the DM: they follow as a reply, where they are fitted again
                return ReadyDmPictures([], [], 0, samples)
            return ReadyDmPictures(fitted, positions, withheld, samples)
        ready_at = job.finished_at or samples.created_at
        give_up_at = ready_at + deadline
        now = self.generations.now()
        if not samples.state.is_terminal and now < give_up_at:
            return ReadyDmPictures([], [], 0, samples, wait_until=min(give_up_at, now + SAMPLE_POLL))
        return ReadyDmPictures([], [], 0, samples)

    async def after_ready_dm(self, pictures: ReadyDmPictures, posted: Posted) -> None:
        """The DM went: its pictures are posted, or the samples will follow as a reply to it."""
        samples = pictures.samples
        if samples is None:
            return
        if pictures.files or samples.state is GenerationState.READY:
            await self._posted(samples, pictures.positions, posted)
            await self.store.settle_outbox_key(result_draft(samples.id).dedupe_key)
        else:
            await self.generations.set_reply_to(samples.id, posted.message_id)
