"""World state and observation records of the fake Discord."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .discord_payloads import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    JSON,
    iso,
    member_payload,
    role_payload,
    snowflake_time,
    user_payload,
)

if TYPE_CHECKING:
    from .discord_server import FakeDiscord

T = TypeVar("T")
POLL_S = 0.05


class Notifier:
    """Wakes every waiter whenever the fake's state changes; waiters re-check their predicate."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def wait_for(self, check: Callable[[], T | None], timeout: float, what: Callable[[], str]) -> T:  # noqa: ASYNC109
        """Return the first truthy ``check()`` result; raise ``TimeoutError`` with ``what()`` after timeout.
        ``check`` runs on every change and at least every ``POLL_S``: it may read the client's state too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake Discord: timed out after {timeout}s waiting for {what()}")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            try:
                await asyncio.wait({fut}, timeout=min(remaining, POLL_S))
            finally:
                self._waiters.discard(fut)


# ---------------------------------------------------------------------------------------------------------------
# World state
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    """A Discord user known to the fake."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    dms_open: bool = True

    def to_payload(self) -> JSON:
        return user_payload(self.id, self.username, bot=self.bot, global_name=self.global_name)


@dataclass
class FakeRole:
    """A guild role."""

    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None

    def to_payload(self) -> JSON:
        return role_payload(
            self.id, self.name, self.permissions, position=self.position, managed=self.managed, bot_id=self.bot_id
        )


@dataclass
class FakeMember:
    """A guild member; ``permissions`` are its base guild-level permissions, to which its roles' permissions
    add (:meth:`FakeGuild.member_permissions` is what interactions report as ``member.permissions``)."""

    guild_id: int
    user_id: int
    roles: list[int]
    permissions: int
    nick: str | None = None
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


#: Channel types of threads (announcement, public and private thread).
THREAD_TYPES = frozenset({10, 11, 12})


@dataclass
class FakeChannel:
    """A guild channel (text 0 by default; any guild type, threads 10-12 included) or a DM channel (type 1)."""

    id: int
    guild_id: int | None
    name: str | None
    type: int = 0
    bot_can_send: bool = True
    position: int = 0
    topic: str | None = None
    recipient_id: int | None = None
    last_message_id: int | None = None
    nsfw: bool = False  # age-restricted
    parent_id: int | None = None  # the category of a channel, the channel of a thread

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


@dataclass
class FakeGuild:
    """A guild with channels, roles and members."""

    id: int
    name: str
    owner_id: int
    bot_role_id: int
    everyone_permissions: int
    bot_permissions: int
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    unavailable: bool = False  # during an outage (``guild_outage``)

    def member_permissions(self, user_id: int) -> int:
        """Guild-level permissions of a member: its base permissions and those of its roles, as Discord
        computes them (owner and administrators get everything)."""
        from .discord_payloads import PERM_ALL

        if user_id == self.owner_id:
            return PERM_ALL
        member = self.members.get(user_id)
        if member is None:
            perms = self.everyone_permissions
        else:
            perms = member.permissions
            for role_id in member.roles:
                role = self.roles.get(role_id)
                perms |= role.permissions if role is not None else 0
        if perms & 8:  # ADMINISTRATOR
            return PERM_ALL
        return perms

    def member_to_payload(self, member: FakeMember, user: FakeUser) -> JSON:
        return member_payload(user.to_payload(), member.roles, joined_at=member.joined_at, nick=member.nick)


# ---------------------------------------------------------------------------------------------------------------
# Attachments and messages
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FakeAttachment:
    """Bytes stored by the fake and served on its CDN; ``downloads`` counts CDN GETs."""

    id: int
    filename: str
    content_type: str | None
    data: bytes = field(repr=False)
    cdn_path: str  # e.g. "/attachments/<channel>/<id>/<filename>"
    base_url: str
    ex: int
    is_: int
    hm: str
    ephemeral: bool = False
    description: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None
    downloads: int = 0
    message_id: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def query(self) -> str:
        return f"ex={self.ex:x}&is={self.is_:x}&hm={self.hm}&"

    @property
    def url(self) -> str:
        return f"{self.base_url}/cdn{self.cdn_path}?{self.query}"

    @property
    def proxy_url(self) -> str:
        return f"{self.base_url}/media{self.cdn_path}?{self.query}"

    def to_payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
            "flags": 0,
        }
        if self.content_type and self.content_type.startswith("image/"):
            data["placeholder"] = "AAAA"
            data["placeholder_version"] = 1
        if self.width is not None:
            data["width"] = self.width
            data["height"] = self.height
        if self.description is not None:
            data["description"] = self.description
        if self.title is not None:
            data["title"] = self.title
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass
class FakeMessage:
    """A message created by the bot (channel, DM, interaction response or followup), with its edit history."""

    id: int
    channel_id: int
    guild_id: int | None
    author: JSON
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    tts: bool = False
    allowed_mentions: JSON | None = None
    message_reference: JSON | None = None
    nonce: str | int | None = None
    poll: JSON | None = None
    edited_at: dt.datetime | None = None
    deleted: bool = False
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: JSON | None = None
    history: list[JSON] = field(default_factory=list)  # payload snapshots taken before each edit
    edit_bodies: list[JSON] = field(default_factory=list)  # the JSON body of every edit request

    @property
    def created_at(self) -> dt.datetime:
        return snowflake_time(self.id)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True for a deferred ("thinking") interaction response that has not been filled in yet."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def edit_count(self) -> int:
        return len(self.edit_bodies)

    @property
    def attachment_urls(self) -> list[str]:
        return [a.url for a in self.attachments]

    def custom_ids(self) -> list[str]:
        """Every ``custom_id`` found in the message's components (any nesting)."""
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("custom_id"), str):
                    found.append(node["custom_id"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.components)
        return found

    def text(self) -> str:
        """Content, embed text and components-v2 text displays joined, for loose assertions."""
        parts = [self.content]
        for embed in self.embeds:
            for key in ("title", "description"):
                if embed.get(key):
                    parts.append(str(embed[key]))
            for fld in embed.get("fields", []):
                parts.append(f"{fld.get('name', '')}: {fld.get('value', '')}")
            if embed.get("footer", {}).get("text"):
                parts.append(embed["footer"]["text"])

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") == 10 and isinstance(node.get("content"), str):
                    parts.append(node["content"])
                if node.get("type") == 2 and isinstance(node.get("label"), str):
                    parts.append(node["label"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.components)
        return "\n".join(p for p in parts if p)

    def to_payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author,
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at),
            "tts": self.tts,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "mention_channels": [],
            "attachments": [a.to_payload() for a in self.attachments],
            "embeds": self.embeds,
            "reactions": [],
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
            "components": self.components,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.poll is not None:
            data["poll"] = self.poll
        return data


# ---------------------------------------------------------------------------------------------------------------
# Observation
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class RecordedFile:
    """A file part of a multipart request."""

    field_name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (REST, webhook, callback or CDN)."""

    method: str
    raw_path: str  # full path as received, e.g. /api/v10/channels/1/messages
    path: str  # without the /api/v10 prefix
    route: str | None  # templated, e.g. /channels/{channel_id}/messages; None when unknown
    params: dict[str, str]  # path parameters of the route
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    time: float  # event-loop time
    status: int = 0
    response: Any = None
    fault: str | None = None  # name of the injected fault that answered, if any

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def is_bot_authorized(self, token: str) -> bool:
        return self.authorization == f"Bot {token}"

    def matches(self, method: str | None = None, route: str | None = None, path_regex: str | None = None) -> bool:
        """Match on method, templated route and/or a regex searched in ``path``."""
        if method is not None and self.method != method.upper():
            return False
        if route is not None and self.route != route:
            return False
        return path_regex is None or re.search(path_regex, self.path) is not None


@dataclass
class CommandSync:
    """One bulk overwrite of application commands (``tree.sync``)."""

    guild_id: int | None
    commands: list[JSON]
    time: float


@dataclass
class InteractionRecord:
    """An interaction the fake dispatched, and everything the bot did with its token."""

    fake: FakeDiscord
    payload: JSON
    created_at: float  # event-loop time of dispatch
    callback: JSON | None = None
    callback_files: list[RecordedFile] = field(default_factory=list)
    callback_at: float | None = None
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    token_expired: bool = False
    rejected_callbacks: list[JSON] = field(default_factory=list)  # {status, error, latency, body} per refusal

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def token(self) -> str:
        return str(self.payload["token"])

    @property
    def type(self) -> int:
        return int(self.payload["type"])

    @property
    def channel_id(self) -> int | None:
        value = self.payload.get("channel_id")
        return None if value is None else int(value)

    @property
    def callback_type(self) -> int | None:
        return None if self.callback is None else int(self.callback["type"])

    @property
    def callback_data(self) -> JSON:
        return {} if self.callback is None else dict(self.callback.get("data") or {})

    @property
    def callback_latency(self) -> float | None:
        """Seconds between dispatch and the bot's initial response."""
        return None if self.callback_at is None else self.callback_at - self.created_at

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.callback_data.get("flags") or 0) & FLAG_EPHEMERAL)

    @property
    def modal(self) -> JSON | None:
        """The modal the bot opened (callback type 9), if any."""
        return self.callback_data if self.callback_type == 9 else None

    @property
    def autocomplete_choices(self) -> list[JSON] | None:
        return list(self.callback_data.get("choices") or []) if self.callback_type == 8 else None

    @property
    def messages(self) -> list[FakeMessage]:
        """Original response (if any) followed by followups."""
        out = [self.original] if self.original is not None else []
        return out + [m for m in self.followups if m is not self.original]

    def requests(self) -> list[RecordedRequest]:
        """Every request made with this interaction's token."""
        return [r for r in self.fake.requests if self.token in r.path]

    async def wait_callback(self, timeout: float = 5.0) -> JSON:  # noqa: ASYNC109
        """The initial response body (``{"type": .., "data": ..}``)."""
        return await self.fake._notifier.wait_for(
            lambda: self.callback,
            timeout,
            lambda: f"the callback of interaction {self.id} (rejected: {self.rejected_callbacks})",
        )

    async def wait_original(
        self,
        pred: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> FakeMessage:
        """The @original message once ``pred`` holds (default: it exists and is no longer loading)."""
        check = pred or (lambda m: not m.loading)

        def probe() -> FakeMessage | None:
            msg = self.original
            return msg if msg is not None and check(msg) else None

        return await self.fake._notifier.wait_for(
            probe, timeout, lambda: f"@original of interaction {self.id} to match (now: {self.original!r})"
        )

    async def wait_followup(
        self,
        pred: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> FakeMessage:
        """The first followup for which ``pred`` holds (default: any)."""
        check = pred or (lambda m: True)

        def probe() -> FakeMessage | None:
            return next((m for m in self.followups if check(m)), None)

        return await self.fake._notifier.wait_for(
            probe, timeout, lambda: f"a followup of interaction {self.id} (have {len(self.followups)})"
        )


@dataclass
class GatewayEvent:
    """A payload the fake received from a gateway client (identify, resume, heartbeat, presence...)."""

    session_id: str | None
    op: int
    data: Any
    time: float
