"""Pure helpers for the fake Discord: snowflakes, timestamps, permissions and JSON payload shapes."""

from __future__ import annotations

import datetime as dt
import io
import json
import mimetypes
import re
from typing import Any

import discord

JSON = dict[str, Any]

# Message flags (api-docs: resources/message "Message Flags").
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15
SETTABLE_MESSAGE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2

# Interaction types and callback types.
INTERACTION_PING = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE = 8
CALLBACK_MODAL = 9

# Message types.
MESSAGE_DEFAULT = 0
MESSAGE_CHAT_INPUT_COMMAND = 20

# Application command option types.
OPT_SUB_COMMAND = 1
OPT_SUB_COMMAND_GROUP = 2
OPT_STRING = 3
OPT_INTEGER = 4
OPT_BOOLEAN = 5
OPT_USER = 6
OPT_CHANNEL = 7
OPT_ROLE = 8
OPT_MENTIONABLE = 9
OPT_NUMBER = 10
OPT_ATTACHMENT = 11

# Permissions.
PERM_SEND_MESSAGES = discord.Permissions(send_messages=True).value
PERM_ALL = discord.Permissions.all().value
DEFAULT_EVERYONE_PERMISSIONS = discord.Permissions(
    create_instant_invite=True,
    add_reactions=True,
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    use_external_emojis=True,
    connect=True,
    speak=True,
    change_nickname=True,
    use_application_commands=True,
    send_messages_in_threads=True,
    create_public_threads=True,
).value
DEFAULT_BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
DENIED_WHEN_CANNOT_SEND = discord.Permissions(
    send_messages=True, send_messages_in_threads=True, attach_files=True, embed_links=True
).value

DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
INTERACTION_DEADLINE_S = 3.0
INTERACTION_TOKEN_TTL_S = 15 * 60.0
CDN_URL_TTL_S = 24 * 3600


class SnowflakeGenerator:
    """Monotonic, unique snowflakes close to the current time (so interactions are not expired)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        value = max(discord.utils.time_snowflake(discord.utils.utcnow()), self._last + 1)
        self._last = value
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    """Discord's ISO-8601 timestamp format."""
    return None if moment is None else moment.isoformat()


def snowflake_time(snowflake: int) -> dt.datetime:
    return discord.utils.snowflake_time(snowflake)


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_content_type(data: bytes, filename: str, declared: str | None) -> str | None:
    """Guess a content type the way Discord does: magic bytes, then extension, then what the client said."""
    for magic, ctype in _MAGIC:
        if data.startswith(magic):
            return ctype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(filename)
    if guessed is not None:
        return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed
    return declared


def image_size(data: bytes, content_type: str | None) -> tuple[int | None, int | None]:
    """(width, height) of an image, or (None, None)."""
    if not content_type or not content_type.startswith("image/"):
        return None, None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height)
    except Exception:
        return None, None


def sanitize_filename(filename: str) -> str:
    """Discord replaces characters outside a safe set with underscores."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", filename.strip()) or "unknown"
    return cleaned[:1024]


# ---------------------------------------------------------------------------------------------------------------
# Payload shapes
# ---------------------------------------------------------------------------------------------------------------


def user_payload(user_id: int, username: str, *, bot: bool = False, global_name: str | None = None) -> JSON:
    data: JSON = {
        "id": str(user_id),
        "username": username,
        "global_name": global_name,
        "discriminator": "0",
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "primary_guild": None,
        "collectibles": None,
    }
    if bot:
        data["bot"] = True
        data["discriminator"] = "0000"
    return data


def role_payload(
    role_id: int,
    name: str,
    permissions: int,
    *,
    position: int = 0,
    managed: bool = False,
    bot_id: int | None = None,
) -> JSON:
    data: JSON = {
        "id": str(role_id),
        "name": name,
        "description": None,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": managed,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    if bot_id is not None:
        data["tags"] = {"bot_id": str(bot_id)}
    return data


def member_payload(user: JSON, roles: list[int], *, joined_at: dt.datetime, nick: str | None = None) -> JSON:
    return {
        "user": user,
        "roles": [str(r) for r in roles],
        "nick": nick,
        "avatar": None,
        "banner": None,
        "joined_at": iso(joined_at),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }


def attachment_option_value(attachment: JSON) -> str:
    return str(attachment["id"])


def infer_option_type(value: Any) -> int:
    """Application-command option type for a Python value (bool before int: bool is an int)."""
    if isinstance(value, dict) and "filename" in value and "url" in value:
        return OPT_ATTACHMENT
    if isinstance(value, bool):
        return OPT_BOOLEAN
    if isinstance(value, int):
        return OPT_INTEGER
    if isinstance(value, float):
        return OPT_NUMBER
    return OPT_STRING
