"""What the bot asks for when it is invited to a server, and the invite URL (`lorabot invite`).

The permission set is kept here, in one place, and derived from what the code does with the bot
token in a server's channels (`bot/delivery/messenger.py`; `bot_can_post` in `cogs/training.py`
checks the same permissions before a card goes to a channel instead of the member's DMs):

- View Channel: see the channel where `/train` or `/imagine` ran, to post there.
- Send Messages: post a job's card, `/imagine` results, and the mention that replaces a DM when
  a member's DMs are closed. Editing the bot's own cards needs nothing more.
- Send Messages in Threads: the same, when the command ran in a thread.
- Embed Links: the cards are embeds.
- Attach Files: the card carries the cropped photos (their CDN links are what the provider
  downloads), and `/imagine` pictures are re-hosted as attachments.

Nothing else: replies (the ready DM's samples) are only sent in DMs, where server permissions do
not apply, the bot reads no message history, and `allowed_mentions` names only the member.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import discord
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Exactly the permissions the bot uses in a server's channels (see the module's docstring).
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
)

#: `bot` adds the bot user to the server; `applications.commands` lets its slash commands appear.
SCOPES = ("bot", "applications.commands")


def invite_url(application_id: int, permissions: discord.Permissions = REQUIRED_PERMISSIONS) -> str:
    """The OAuth2 URL that adds the bot to a server with exactly its scopes and permissions."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={int(application_id)}"
        f"&scope={'+'.join(SCOPES)}&permissions={permissions.value}"
    )


class DiscordSettings(BaseSettings):
    """`lorabot invite` needs only the token and the REST base, not the provider's key or PUBLIC_URL."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)
    discord_token: SecretStr
    discord_api_base: str = "https://discord.com/api/v10"
    log_level: str = "INFO"

    @field_validator("discord_api_base")
    @classmethod
    def _check_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an absolute http or https URL, got {value!r}")
        return value.rstrip("/")


@asynccontextmanager
async def discord_rest(api_base: str, token: str) -> AsyncIterator[tuple[discord.http.HTTPClient, dict[str, Any]]]:
    """Log in to Discord's REST API with the bot token (`GET /users/@me`), without the gateway.

    Yields discord.py's HTTP client, pointed at `api_base` for as long as the block runs, and the
    bot user's payload. Raises `discord.LoginFailure` when Discord refuses the token.
    """
    previous = discord.http.Route.BASE
    discord.http.Route.BASE = api_base.rstrip("/")
    http = discord.http.HTTPClient(asyncio.get_running_loop(), max_ratelimit_timeout=30.0)
    try:
        me = await http.static_login(token.strip())
        yield http, dict(me)
    finally:
        await http.close()
        discord.http.Route.BASE = previous


async def application_info(http: discord.http.HTTPClient) -> dict[str, Any]:
    """`GET /oauth2/applications/@me`: the application behind the token (its id is the client id)."""
    return dict(await http.application_info())


async def read_application_id(api_base: str, token: str) -> int:
    """The application id of the bot whose token this is."""
    async with discord_rest(api_base, token) as (http, _me):
        return int((await application_info(http))["id"])
