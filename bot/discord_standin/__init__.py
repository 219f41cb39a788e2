"""A Discord stand-in (REST, CDN and gateway) on loopback, driven by the real discord.py client.

`lorabot demo` runs the bot against it, and the end-to-end tests use it as their fake Discord.
`lorabot run` never imports it.
"""

from .discord_gateway import GatewaySession, shard_for
from .discord_models import (
    CommandSync,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    InteractionRecord,
    RecordedFile,
    RecordedRequest,
)
from .discord_server import FakeDiscord, pointed_at

__all__ = [
    "CommandSync",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "GatewaySession",
    "InteractionRecord",
    "RecordedFile",
    "RecordedRequest",
    "pointed_at",
    "shard_for",
]
