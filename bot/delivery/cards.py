"""Posts a job's card with its photos on Discord (the domain's `CardPoster`)."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.delivery.messenger import Messenger
from bot.jobs.model import Job, Posted
from bot.jobs.ports import JobStore
from bot.render import job_card


class DiscordCardPoster:
    """The card as the notifier later edits it; one nonce per job, so a repeated post after a
    crash returns the first message instead of posting a second."""

    def __init__(self, store: JobStore, messenger: Messenger, *, simulated: bool = False) -> None:
        self.store = store
        self.messenger = messenger
        #: `lorabot run --simulate`: the card says the training is simulated.
        self.simulated = simulated

    async def post_card(self, job: Job, photos: Sequence[tuple[str, bytes]], *, channel_id: int) -> Posted:
        return await self.messenger.post(channel_id, embed=await self._card(job), files=photos, nonce_key=_nonce(job))

    async def dm_card(self, job: Job, photos: Sequence[tuple[str, bytes]]) -> Posted:
        return await self.messenger.dm(job.owner_id, embed=await self._card(job), files=photos, nonce_key=_nonce(job))

    async def _card(self, job: Job) -> discord.Embed:
        return job_card(job, await self.store.events_for_job(job.id), simulated=self.simulated)


def _nonce(job: Job) -> str:
    return f"card:{job.id}"
