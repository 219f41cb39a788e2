"""Test fakes: a fake Discord (REST, CDN and gateway) on loopback for the real discord.py client."""

from .discord_gateway import GatewaySession
from .discord_models import (
    CommandSync,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
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
    "FakeUser",
    "GatewaySession",
    "InteractionRecord",
    "RecordedFile",
    "RecordedRequest",
    "pointed_at",
]
