"""Delivers the outbox to Discord: card edits (coalesced) and the owner's DMs.

The card never lags behind the DM: an edit for a job that has reached a terminal state is not
coalesced, and a job's pending card edit is delivered before any DM about that job.

Items were written in the same transaction as the state change that caused them. Delivery is
at least once: an item is marked done only after Discord accepted it, and repeats are harmless
because a card edit renders the current state, and a DM carries a nonce derived from its key
that Discord uses to return the first message instead of posting a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from datetime import datetime, timedelta

import discord

from bot.delivery.messenger import Messenger
from bot.delivery.pictures import PictureDelivery, ReadyDmPictures
from bot.jobs.delivery_errors import CannotPost, DiscordUnavailable, DmsClosed, MessageGone
from bot.jobs.model import Job, OutboxItem
from bot.jobs.ports import JobStore
from bot.jobs.states import JobState
from bot.metrics import Metrics
from bot.render import generate_view, job_card, outcome_message

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12


#: How long an item claimed by this process stays out of the others' reach. Long enough for one
#: delivery, with Discord's rate limits (discord.py waits up to 60 s); if the process dies, another
#: process delivers the item once the lease has run out.
OUTBOX_LEASE_SECONDS = 90.0


def process_identity() -> str:
    """A name for this process that no other process sharing the database has: host, pid, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def retry_delay(attempts: int) -> timedelta:
    """Backoff with jitter for a failed delivery: 2 s, 4 s, ... capped at 2 minutes."""
    base = min(120.0, 2.0 * 2**attempts)
    return timedelta(seconds=base / 2 + random.uniform(0, base / 2))


class Notifier:
    def __init__(
        self,
        store: JobStore,
        messenger: Messenger,
        *,
        edit_interval: float = 3.0,
        pictures: PictureDelivery | None = None,
        samples_deadline: float = 300.0,
        simulated: bool = False,
        metrics: Metrics | None = None,
        owner: str | None = None,
        lease: float = OUTBOX_LEASE_SECONDS,
    ) -> None:
        self.store = store
        #: Who this process is when it leases outbox items (several processes may share the outbox).
        self.owner = owner or process_identity()
        self.lease = timedelta(seconds=lease)
        self.messenger = messenger
        #: Failed deliveries, by item kind and reason.
        self.metrics = metrics if metrics is not None else Metrics()
        self.edit_interval = timedelta(seconds=edit_interval)
        #: Generations' results, and the sample pictures of the ready DM (None: no /imagine).
        self.pictures = pictures
        self.samples_deadline = timedelta(seconds=samples_deadline)
        #: `lorabot run --simulate`: cards and DMs say the training is simulated.
        self.simulated = simulated
        self._wake = asyncio.Event()
        self._last_edit: dict[int, datetime] = {}
        self._flushed: set[int] = set()  # card items delivered ahead of a DM in the current pass

    def wake(self) -> None:
        self._wake.set()

    async def connection_restored(self) -> None:
        """Discord is reachable again: deliver what piled up now instead of after the backoff."""
        caught_up = await self.store.retry_outbox_now()
        if caught_up:
            log.info("Discord is back; delivering %d pending notification(s)", caught_up)
        self.wake()

    async def run(self) -> None:
        """Deliver due items forever; sleeps until the next is due or a new one is written."""
        while True:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox pass failed; retrying shortly")
            next_due = await self.store.next_outbox_due()
            timeout = 30.0
            if next_due is not None:
                timeout = max(0.05, min(timeout, (next_due - self.store.now()).total_seconds()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def deliver_due(self) -> int:
        """One pass over the due items; returns how many were delivered."""
        delivered = 0
        self._flushed.clear()
        items = await self.store.claim_outbox(self.owner, lease=self.lease)
        for index, item in enumerate(items):
            if item.id in self._flushed:  # already delivered in this pass, ahead of its job's DM
                continue
            try:
                if await self.deliver(item):
                    delivered += 1
            except DiscordUnavailable as error:
                # Discord is down or throttling hard: back off this item and stop the pass.
                log.warning("outbox %s: Discord unavailable (%s), retrying later", item.dedupe_key, error)
                self.metrics.discord_failure(item.kind, "discord_unavailable")
                await self.store.mark_failed(item, str(error), retry_delay(item.attempts))
                await self._release(items[index + 1 :])
                break
            except Exception as error:  # one bad item must never block the others
                give_up = item.attempts + 1 >= MAX_ATTEMPTS
                log.exception("outbox %s: delivery failed%s", item.dedupe_key, "; giving up" if give_up else "")
                self.metrics.discord_failure(item.kind, "error")
                retry = None if give_up else retry_delay(item.attempts)
                await self.store.mark_failed(item, type(error).__name__, retry)
        return delivered + len(self._flushed)

    async def _release(self, items: list[OutboxItem]) -> None:
        """Hand back items claimed but not tried in this pass, due as before, for any process."""
        for item in items:
            if item.id not in self._flushed:
                await self.store.postpone(item, item.next_attempt_at)

    async def deliver(self, item: OutboxItem) -> bool:
        job = await self.store.get_job(item.job_id) if item.job_id else None
        if job is None:  # the owner deleted their data in the meantime
            await self.store.mark_delivered(item)
            return False
        if item.kind == "card":
            return await self._deliver_card(item, job)
        if item.kind == "generation":
            if self.pictures is None:
                await self.store.mark_delivered(item)
                return False
            return await self.pictures.deliver(item, job)
        if await self._card_before_dm(job):
            job = await self.store.get_job(job.id) or job  # the card may have been re-posted
        return await self._deliver_dm(item, job)

    async def _card_before_dm(self, job: Job) -> bool:
        """Deliver the job's pending card edit (due or postponed) now, so the owner never reads
        an outcome in a DM that the card doesn't show yet. Returns whether it was delivered.

        Discord unavailable: raised, so the DM waits too and the pass backs off. Any other failure
        stays the card item's own (it is retried or given up in its own turn); the DM still goes.
        """
        card = await self.store.pending_card_item(job.id)
        if card is None:
            return False
        try:
            delivered = await self._deliver_card(card, job, urgent=True)
        except DiscordUnavailable:
            raise
        except Exception:
            log.exception("job %s: could not update its card before the DM; sending the DM anyway", job.id)
            self.metrics.discord_failure("card", "error")
            return False
        if delivered:
            self._flushed.add(card.id)
        return delivered

    async def _deliver_card(self, item: OutboxItem, job: Job, *, urgent: bool = False) -> bool:
        last = self._last_edit.get(job.id)
        now = self.store.now()
        # A terminal state is the last edit a card gets: show it at once, never after the DM.
        coalesce = not urgent and not job.state.is_terminal
        if coalesce and last is not None and now - last < self.edit_interval:
            await self.store.postpone(item, last + self.edit_interval)  # coalesce bursts into one edit
            return False
        embed = job_card(job, await self.store.events_for_job(job.id), simulated=self.simulated)
        try:
            if job.card_channel_id is None or job.card_message_id is None:
                raise MessageGone("no card yet")
            await self.messenger.edit(job.card_channel_id, job.card_message_id, embed=embed, view=self._card_view(job))
        except MessageGone:
            await self._repost_card(job, embed)
        except CannotPost as error:
            log.warning("job %s: cannot edit its card (%s); giving up on this edit", job.id, error)
            self.metrics.discord_failure("card", "cannot_post")
            await self.store.mark_failed(item, str(error), None)
            return False
        if job.state.is_terminal:
            self._last_edit.pop(job.id, None)  # no more edits to space out
        else:
            self._last_edit[job.id] = now
        await self.store.mark_delivered(item)
        return True

    async def _repost_card(self, job: Job, embed: discord.Embed) -> None:
        """The card was deleted: post a new one where it was (or in the owner's DMs) and keep going."""
        channel_id = job.card_channel_id or job.channel_id
        try:
            posted = await self.messenger.post(channel_id, embed=embed, view=self._card_view(job))
        except (MessageGone, CannotPost):
            posted = await self.messenger.dm(job.owner_id, embed=embed, view=self._card_view(job))
        await self.store.set_card(job.id, posted.channel_id, posted.message_id)
        log.info("job %s: card re-posted as message %s", job.id, posted.message_id)

    def _card_view(self, job: Job) -> discord.ui.View | None:
        """A ready model's card carries the Generate button (when /imagine is on)."""
        if self.pictures is None or job.state is not JobState.MODEL_READY:
            return None
        return generate_view(job.id)

    async def _deliver_dm(self, item: OutboxItem, job: Job) -> bool:
        state = JobState(str(item.payload.get("state", job.state.value)))
        text = outcome_message(job, state, simulated=self.simulated)
        pictures = ReadyDmPictures([], [], 0, None)
        view = None
        if state is JobState.MODEL_READY and self.pictures is not None:
            view = generate_view(job.id)
            pictures = await self.pictures.for_ready_dm(job, self.samples_deadline)
            if pictures.wait_until is not None:  # the sample pictures are on their way
                await self.store.postpone(item, pictures.wait_until)
                return False
            text += self._samples_note(pictures)
        if not await self.store.dms_closed(job.owner_id):
            try:
                posted = await self.messenger.dm(
                    job.owner_id, content=text, files=pictures.files, view=view, nonce_key=item.dedupe_key
                )
            except DmsClosed:
                log.info("job %s: owner's DMs are closed; mentioning them in the channel instead", job.id)
                self.metrics.discord_failure("dm", "dms_closed")
                await self.store.mark_dms_closed(job.owner_id)
            else:
                if self.pictures is not None:
                    await self.pictures.after_ready_dm(pictures, posted)
                await self.store.mark_delivered(item)
                return True
        try:
            posted = await self.messenger.post(
                job.channel_id,
                content=f"<@{job.owner_id}> {text}\n(I could not DM you.)",
                files=pictures.files,
                view=view,
                mention_user=job.owner_id,
                nonce_key=item.dedupe_key + ":channel",
            )
        except (CannotPost, MessageGone) as error:
            log.warning("job %s: could not reach the owner by DM or in the channel (%s)", job.id, error)
            self.metrics.discord_failure("dm", "unreachable")
            give_up = item.attempts + 1 >= MAX_ATTEMPTS
            await self.store.mark_failed(item, str(error), None if give_up else retry_delay(item.attempts))
            return False
        if self.pictures is not None:
            await self.pictures.after_ready_dm(pictures, posted)
        await self.store.mark_delivered(item)
        return True

    @staticmethod
    def _samples_note(pictures: ReadyDmPictures) -> str:
        samples = pictures.samples
        if samples is None:
            return ""
        if pictures.files or pictures.withheld:
            note = f"\nHere is what it makes (*{samples.user_prompt}*, seed {samples.seed}):"
            if pictures.withheld:
                note += f" {pictures.withheld} picture(s) withheld because the safety checker flagged them."
            return note
        if not samples.state.is_terminal:
            return "\nA few sample pictures are still being made; they'll follow in a moment."
        return ""
