"""The Discord adapter for work that outlives an interaction: cards and DMs, with the bot token.

Interaction tokens die after 15 minutes and a training takes about 30, so everything the
notifier sends goes through channel and DM endpoints. discord.py handles 429s itself; this
module only turns Discord's answers into the domain's delivery errors
(`bot/jobs/delivery_errors.py`), which the notifier and the submission flow act on.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import Any

import aiohttp
import discord

from bot.jobs.delivery_errors import CannotPost, DeliveryError, DiscordUnavailable, DmsClosed, MessageGone, TooLarge
from bot.jobs.model import Posted

#: Discord error codes we act on.
UNKNOWN_CHANNEL, UNKNOWN_MESSAGE = 10003, 10008
MISSING_ACCESS, MISSING_PERMISSIONS = 50001, 50013
CANNOT_DM, NO_MUTUAL_GUILDS = 50007, 50278
REQUEST_TOO_LARGE = 40005
#: Discord's default upload limit per message (Nitro and boosts raise it for people, not for bots).
UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024


def nonce_for(key: str) -> str:
    """A deterministic nonce (<= 25 chars). discord.py sends enforce_nonce, so Discord returns the
    existing message instead of posting a second one when a delivery is repeated after a crash."""
    return hashlib.sha256(key.encode()).hexdigest()[:25]


def _translate(error: Exception) -> DeliveryError:
    if isinstance(error, discord.HTTPException) and (error.status == 413 or error.code == REQUEST_TOO_LARGE):
        return TooLarge(f"{error.status} {error.code}")
    if isinstance(error, discord.NotFound):
        return MessageGone(f"{error.status} {error.code}")
    if isinstance(error, discord.Forbidden):
        if error.code in (CANNOT_DM, NO_MUTUAL_GUILDS):
            return DmsClosed(f"{error.status} {error.code}")
        return CannotPost(f"{error.status} {error.code}")
    if isinstance(error, discord.HTTPException):
        return DiscordUnavailable(f"{error.status} {error.code}")
    return DiscordUnavailable(type(error).__name__)


_TRANSIENT = (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, TimeoutError, OSError)


class Messenger:
    """Posts and edits messages with the bot token through a logged-in discord.py client."""

    def __init__(self, client: discord.Client) -> None:
        self.client = client

    async def post(
        self,
        channel_id: int,
        *,
        content: str | None = None,
        embed: discord.Embed | None = None,
        files: Sequence[tuple[str, bytes]] = (),
        mention_user: int | None = None,
        nonce_key: str | None = None,
        view: discord.ui.View | None = None,
        reply_to: int | None = None,
    ) -> Posted:
        channel = self.client.get_partial_messageable(channel_id)
        mentions = discord.AllowedMentions(users=[discord.Object(mention_user)] if mention_user else False)
        extra: dict[str, Any] = {"nonce": nonce_for(nonce_key)} if nonce_key else {}
        if embed is not None:
            extra["embed"] = embed
        if view is not None:
            extra["view"] = view
        if reply_to is not None:
            # A reply that still posts if the message it answers is gone.
            extra["reference"] = discord.MessageReference(
                message_id=reply_to, channel_id=channel_id, fail_if_not_exists=False
            )
        try:
            message = await channel.send(
                content=content,
                files=[discord.File(io.BytesIO(data), filename=name) for name, data in files],
                allowed_mentions=mentions,
                **extra,
            )
        except _TRANSIENT as error:
            raise _translate(error) from error
        return Posted(message.channel.id, message.id, tuple(a.url for a in message.attachments))

    async def edit(
        self, channel_id: int, message_id: int, *, embed: discord.Embed, view: discord.ui.View | None = None
    ) -> None:
        message = self.client.get_partial_messageable(channel_id).get_partial_message(message_id)
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            await message.edit(embed=embed, **extra)
        except _TRANSIENT as error:
            raise _translate(error) from error

    async def dm_channel(self, user_id: int) -> int:
        try:
            channel = await self.client.create_dm(discord.Object(user_id))
        except _TRANSIENT as error:
            raise _translate(error) from error
        return channel.id

    async def dm(
        self,
        user_id: int,
        *,
        content: str | None = None,
        embed: discord.Embed | None = None,
        files: Sequence[tuple[str, bytes]] = (),
        nonce_key: str | None = None,
        view: discord.ui.View | None = None,
        reply_to: int | None = None,
    ) -> Posted:
        channel_id = await self.dm_channel(user_id)
        return await self.post(
            channel_id, content=content, embed=embed, files=files, nonce_key=nonce_key, view=view, reply_to=reply_to
        )
