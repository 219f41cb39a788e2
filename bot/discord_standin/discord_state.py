"""World state of the fake Discord: users, guilds, channels, messages, attachments, and their payloads."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import EllipsisType
from typing import Any, TypeVar

import discord

from .discord_gateway import FakeGateway, GatewaySession
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
    Notifier,
    RecordedFile,
    RecordedRequest,
)
from .discord_payloads import (
    CDN_URL_TTL_S,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    DENIED_WHEN_CANNOT_SEND,
    FLAG_EPHEMERAL,
    FLAG_IS_COMPONENTS_V2,
    FLAG_LOADING,
    JSON,
    SETTABLE_MESSAGE_FLAGS,
    SnowflakeGenerator,
    image_size,
    iso,
    sanitize_filename,
    sniff_content_type,
    snowflake_time,
    utcnow,
)
from .discord_rest import API_PREFIX, file_index, validate_message_body

T = TypeVar("T")

DM_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12


class FakeState:
    """State shared by the REST handlers, the payload builders and the gateway."""

    gateway: FakeGateway

    def __init__(
        self,
        *,
        application_id: int,
        bot_user_id: int | None,
        token: str,
        bot_username: str,
        owner_id: int,
        host: str,
        port: int,
        attachment_size_limit: int,
        interaction_deadline: float | None,
        echo_message_events: bool,
    ) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id if bot_user_id is not None else application_id
        self.token = token
        self.owner_id = owner_id
        self.host = host
        self.port = port
        self.attachment_size_limit = attachment_size_limit
        self.interaction_deadline = interaction_deadline
        self.echo_message_events = echo_message_events

        self._ids = SnowflakeGenerator()
        self._notifier = Notifier()
        self._secret = secrets.token_bytes(32)
        self._tasks: set[asyncio.Task[Any]] = set()

        # world
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.left_guilds: dict[int, FakeGuild] = {}  # guilds the bot was removed from (``remove_guild``)
        self.channels: dict[int, FakeChannel] = {}
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.bot_user = self.add_user(self.bot_user_id, username=bot_username, bot=True)
        self.add_user(owner_id, username="owner")

        # observation
        self.requests: list[RecordedRequest] = []
        self.cdn_requests: list[RecordedRequest] = []
        self.messages: dict[int, list[FakeMessage]] = {}
        self._messages_by_id: dict[int, FakeMessage] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self._attachments_by_path: dict[str, FakeAttachment] = {}
        self._valid_signatures: dict[str, tuple[int, int]] = {}  # hm -> (attachment id, ex)
        self.interactions: dict[int, InteractionRecord] = {}
        self._interactions_by_token: dict[str, InteractionRecord] = {}
        self.command_syncs: list[CommandSync] = []
        self.errors: list[Exception] = []  # exceptions raised inside the fake's handlers (bugs in the fake)
        self._commands: dict[int | None, dict[int, JSON]] = {}
        self._fake_command_ids: dict[str, int] = {}

        # faults read by the handlers
        self._denied_channels: dict[int, int] = {}
        self.unreachable = False

    # -----------------------------------------------------------------------------------------------------------
    # Addresses and gateway helpers
    # -----------------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (discord.py appends ``?v=10&encoding=json&compress=``)."""
        return f"ws://{self.host}:{self.port}/gateway"

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch_soon(self, event: str, data: JSON, *, intent: int = INTENT_GUILDS) -> None:
        """Fire-and-forget dispatch to existing sessions that have ``intent`` (no-op without any)."""
        if not any(not s.invalidated for s in self.gateway.sessions.values()):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._spawn(self.gateway.dispatch(event, data, wait=0, intent=intent))

    # -----------------------------------------------------------------------------------------------------------
    # World state
    # -----------------------------------------------------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        *,
        username: str,
        dms_open: bool = True,
        global_name: str | None = None,
        bot: bool = False,
    ) -> FakeUser:
        user = FakeUser(id=user_id, username=username, global_name=global_name, bot=bot, dms_open=dms_open)
        self.users[user_id] = user
        return user

    def _ensure_user(self, user_id: int) -> FakeUser:
        return self.users.get(user_id) or self.add_user(user_id, username=f"user{user_id}")

    def add_guild(
        self,
        guild_id: int,
        *,
        name: str = "Test guild",
        owner_id: int | None = None,
        channels: Mapping[int, str] | Iterable[int] = (),
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> FakeGuild:
        """Add a guild the bot is in (sent as GUILD_CREATE on IDENTIFY, or now if already connected). A guild the
        bot was removed from is created afresh from these arguments (its old channels are forgotten)."""
        left = self.left_guilds.pop(guild_id, None)
        if left is not None:
            for channel_id in left.channels:
                self.channels.pop(channel_id, None)
        owner = owner_id if owner_id is not None else self.owner_id
        self._ensure_user(owner)
        guild = FakeGuild(
            id=guild_id,
            name=name,
            owner_id=owner,
            bot_role_id=self._ids.next(),
            everyone_permissions=everyone_permissions,
            bot_permissions=bot_permissions,
        )
        guild.roles[guild_id] = FakeRole(id=guild_id, name="@everyone", permissions=everyone_permissions)
        guild.roles[guild.bot_role_id] = FakeRole(
            id=guild.bot_role_id,
            name=self.bot_user.username,
            permissions=bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user_id,
        )
        guild.members[self.bot_user_id] = FakeMember(
            guild_id=guild_id,
            user_id=self.bot_user_id,
            roles=[guild.bot_role_id],
            permissions=everyone_permissions | bot_permissions,
        )
        guild.members[owner] = FakeMember(guild_id=guild_id, user_id=owner, roles=[], permissions=everyone_permissions)
        self.guilds[guild_id] = guild
        items = channels.items() if isinstance(channels, Mapping) else ((cid, "general") for cid in channels)
        for position, (channel_id, channel_name) in enumerate(items):
            channel = FakeChannel(id=channel_id, guild_id=guild_id, name=channel_name, position=position)
            guild.channels[channel_id] = channel
            self.channels[channel_id] = channel
        self._dispatch_soon("GUILD_CREATE", self._guild_create_payload(guild, joined=True))
        return guild

    def add_channel(
        self,
        guild_id: int | None,
        channel_id: int,
        *,
        name: str = "general",
        bot_can_send: bool = True,
        recipient_id: int | None = None,
        nsfw: bool = False,
        type: int = 0,
        parent_id: int | None = None,
    ) -> FakeChannel:
        """Add a guild channel of ``type`` (text by default; a thread, types 10-12, needs the ``parent_id`` of its
        channel and is dispatched as THREAD_CREATE), or, with ``guild_id=None``, a DM channel with ``recipient_id``."""
        if guild_id is None:
            if recipient_id is None:
                raise ValueError("a DM channel needs recipient_id")
            self._ensure_user(recipient_id)
            channel = FakeChannel(id=channel_id, guild_id=None, name=None, type=1, recipient_id=recipient_id)
            self._dm_channels[recipient_id] = channel_id
            self.channels[channel_id] = channel
            return channel
        if type in (1, 3):
            raise ValueError("DM channels have no guild: pass guild_id=None and recipient_id")
        guild = self.guilds[guild_id]
        channel = FakeChannel(
            id=channel_id,
            guild_id=guild_id,
            name=name,
            type=type,
            bot_can_send=bot_can_send,
            position=len(guild.channels),
            nsfw=nsfw,
            parent_id=parent_id,
        )
        if channel.is_thread and parent_id not in guild.channels:
            raise ValueError(f"thread {channel_id} needs parent_id, a channel of guild {guild_id}")
        guild.channels[channel_id] = channel
        self.channels[channel_id] = channel
        if channel.is_thread:
            self._dispatch_soon("THREAD_CREATE", {**self._channel_payload(channel), "newly_created": True})
        else:
            self._dispatch_soon("CHANNEL_CREATE", self._channel_payload(channel))
        return channel

    def set_member(
        self,
        guild_id: int,
        user_id: int,
        *,
        permissions: int | None = None,
        roles: Sequence[int] = (),
        nick: str | None = None,
    ) -> FakeMember:
        """Make ``user_id`` a member with ``roles`` (created if unknown) and guild-level ``permissions``
        (default: @everyone's; given permissions become an extra role so ``permissions_for`` agrees).
        New roles are dispatched as GUILD_ROLE_CREATE to connected sessions."""
        guild = self.guilds[guild_id]
        self._ensure_user(user_id)
        role_ids = list(roles)
        self._ensure_roles(guild, role_ids)
        perms = guild.everyone_permissions if permissions is None else permissions
        if permissions is not None:
            synthetic = self.add_role(guild_id, name=f"perms-{user_id}", permissions=permissions)
            role_ids.append(synthetic.id)
        member = FakeMember(guild_id=guild_id, user_id=user_id, roles=role_ids, permissions=perms, nick=nick)
        guild.members[user_id] = member
        return member

    def add_role(self, guild_id: int, role_id: int | None = None, *, name: str, permissions: int = 0) -> FakeRole:
        """Create a role (dispatched as GUILD_ROLE_CREATE); give it to members with :meth:`add_member_roles`."""
        guild = self.guilds[guild_id]
        rid = role_id if role_id is not None else self._ids.next()
        if rid in guild.roles:
            raise ValueError(f"role {rid} already exists in guild {guild_id}")
        role = FakeRole(id=rid, name=name, permissions=permissions, position=len(guild.roles))
        guild.roles[rid] = role
        self._dispatch_soon("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role.to_payload()})
        return role

    def _ensure_roles(self, guild: FakeGuild, role_ids: Iterable[int]) -> None:
        """Create the roles of ``role_ids`` that ``guild`` does not have (named ``role-<id>``, no permissions)."""
        for role_id in role_ids:
            if role_id not in guild.roles:
                self.add_role(guild.id, role_id, name=f"role-{role_id}")

    def add_member_roles(self, guild_id: int, user_id: int, *role_ids: int) -> FakeMember:
        """Give a member roles (unknown ones are created); their permissions count from now on. Dispatched as
        GUILD_MEMBER_UPDATE to sessions with the GUILD_MEMBERS intent, as Discord does."""
        guild = self.guilds[guild_id]
        member = guild.members.get(user_id)
        if member is None:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}: call set_member first")
        self._ensure_roles(guild, role_ids)
        member.roles.extend(r for r in dict.fromkeys(role_ids) if r not in member.roles)
        self._member_updated(guild, member)
        return member

    def remove_member_roles(self, guild_id: int, user_id: int, *role_ids: int) -> FakeMember:
        """Take roles from a member (GUILD_MEMBER_UPDATE as for :meth:`add_member_roles`)."""
        guild = self.guilds[guild_id]
        member = guild.members[user_id]
        member.roles = [r for r in member.roles if r not in role_ids]
        self._member_updated(guild, member)
        return member

    def _member_updated(self, guild: FakeGuild, member: FakeMember) -> None:
        data = {"guild_id": str(guild.id), **guild.member_to_payload(member, self.users[member.user_id])}
        self._dispatch_soon("GUILD_MEMBER_UPDATE", data, intent=INTENT_GUILD_MEMBERS)
        self._notifier.notify()

    def remove_guild(self, guild_id: int) -> FakeGuild:
        """The bot is removed from the guild (kicked, banned or the guild deleted): it leaves the world and
        GUILD_DELETE without ``unavailable`` goes to the sessions of its shard. Its channels answer 403 Missing
        Access from now on; :meth:`add_guild` adds it again (GUILD_CREATE)."""
        guild = self.guilds.pop(guild_id)
        self.left_guilds[guild_id] = guild
        self._dispatch_soon("GUILD_DELETE", {"id": str(guild_id)})
        self._notifier.notify()
        return guild

    def guild_outage(self, guild_id: int) -> None:
        """The guild becomes unavailable (an outage, not a removal): GUILD_DELETE with ``"unavailable": true``;
        sessions that IDENTIFY meanwhile get no GUILD_CREATE for it. :meth:`end_guild_outage` ends it."""
        guild = self.guilds[guild_id]
        guild.unavailable = True
        self._dispatch_soon("GUILD_DELETE", {"id": str(guild_id), "unavailable": True})

    def end_guild_outage(self, guild_id: int) -> None:
        """The guild is available again: GUILD_CREATE, as Discord sends after an outage."""
        guild = self.guilds[guild_id]
        guild.unavailable = False
        self._dispatch_soon("GUILD_CREATE", self._guild_create_payload(guild))

    def dm_channel_id(self, user_id: int) -> int:
        """The (stable) DM channel id for ``user_id``, created on first use."""
        if user_id not in self._dm_channels:
            self.add_channel(None, self._ids.next(), recipient_id=user_id)
        return self._dm_channels[user_id]

    def add_user_message(
        self,
        channel_id: int,
        user_id: int,
        *,
        content: str = "",
        attachments: Sequence[JSON] = (),
    ) -> FakeMessage:
        """A message posted by a user (e.g. the target of a message context menu); not dispatched."""
        channel = self.channels[channel_id]
        user = self._ensure_user(user_id)
        msg = FakeMessage(
            id=self._ids.next(),
            channel_id=channel_id,
            guild_id=channel.guild_id,
            author=user.to_payload(),
            content=content,
            attachments=[self.attachments[int(a["id"])] for a in attachments],
        )
        self._store_message(msg)
        return msg

    # -----------------------------------------------------------------------------------------------------------
    # Observation
    # -----------------------------------------------------------------------------------------------------------

    async def wait_until_connected(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109
        *,
        sessions: int = 1,
        shards: Iterable[int] = (),
    ) -> list[GatewaySession]:
        """Wait until ``sessions`` gateway sessions are live (READY and GUILD_CREATEs sent), among them one
        for each of ``shards`` (shard ids; a session that did not ask for a shard runs shard 0)."""
        wanted = set(shards)

        def live() -> list[GatewaySession] | None:
            found = self.gateway.live_sessions()
            enough = len(found) >= max(sessions, len(wanted))
            return found if enough and wanted <= {s.shard_id for s in found} else None

        return await self._notifier.wait_for(
            live,
            timeout,
            lambda: (
                f"{sessions} live gateway session(s)"
                + (f" for shards {sorted(wanted)}" if wanted else "")
                + f" (have {len(self.gateway.live_sessions())}: shards {sorted(self.gateway.live_shards())})"
            ),
        )

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """Requests that matched no route (404/405)."""
        return [r for r in self.requests if r.route is None]

    def requests_to(self, method: str | None = None, route: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.matches(method, route)]

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first recorded request (past or future) for which ``predicate`` holds."""
        return await self._notifier.wait_for(
            lambda: next((r for r in self.requests if predicate(r)), None),
            timeout,
            lambda: "a matching request; got: " + ", ".join(f"{r.method} {r.path} {r.status}" for r in self.requests),
        )

    async def wait_for_message(self, predicate: Callable[[FakeMessage], bool], timeout: float = 10.0) -> FakeMessage:  # noqa: ASYNC109
        """The first stored message (in its current state) for which ``predicate`` holds."""
        return await self._notifier.wait_for(
            lambda: next((m for m in self._messages_by_id.values() if predicate(m)), None),
            timeout,
            lambda: f"a matching message among {len(self._messages_by_id)}",
        )

    async def wait_for(self, check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:  # noqa: ASYNC109
        """Re-evaluate ``check`` on every state change until it returns something truthy."""
        return await self._notifier.wait_for(check, timeout, lambda: what)

    def channel_messages(
        self, channel_id: int, *, include_ephemeral: bool = True, include_deleted: bool = False
    ) -> list[FakeMessage]:
        return [
            m
            for m in self.messages.get(channel_id, [])
            if (include_ephemeral or not m.ephemeral) and (include_deleted or not m.deleted)
        ]

    def dms_to(self, user_id: int) -> list[FakeMessage]:
        """Bot-authored messages in the DM channel with ``user_id``."""
        channel_id = self._dm_channels.get(user_id)
        if channel_id is None:
            return []
        return [m for m in self.channel_messages(channel_id) if int(m.author["id"]) == self.bot_user_id]

    def message(self, message_id: int) -> FakeMessage:
        return self._messages_by_id[message_id]

    def attachment_for_url(self, url: str) -> FakeAttachment | None:
        path = urllib.parse.urlsplit(url).path
        for prefix in ("/cdn", "/media"):
            if path.startswith(prefix):
                return self._attachments_by_path.get(urllib.parse.unquote(path[len(prefix) :]))
        return None

    def downloads(self, attachment: int | str | JSON | FakeAttachment) -> int:
        """CDN downloads of an attachment (by id, URL, attachment object or payload)."""
        return self._resolve_attachment(attachment).downloads

    def _resolve_attachment(self, ref: int | str | JSON | FakeAttachment) -> FakeAttachment:
        if isinstance(ref, FakeAttachment):
            return ref
        if isinstance(ref, dict):
            return self.attachments[int(ref["id"])]
        if isinstance(ref, str) and not ref.isdigit():
            found = self.attachment_for_url(ref)
            if found is None:
                raise KeyError(ref)
            return found
        return self.attachments[int(ref)]

    def commands(self, guild_id: int | None = None) -> list[JSON]:
        """Registered application commands (global when ``guild_id`` is None)."""
        return list(self._commands.get(guild_id, {}).values())

    def sync_count(self, guild_id: int | EllipsisType | None = ...) -> int:
        """Number of bulk overwrites (all scopes by default)."""
        return sum(1 for s in self.command_syncs if guild_id is ... or s.guild_id == guild_id)

    # -----------------------------------------------------------------------------------------------------------
    # Attachments
    # -----------------------------------------------------------------------------------------------------------

    def message_payload(self, message: FakeMessage) -> JSON:
        """Current Discord payload of a stored message (re-signs attachment URLs that stopped working)."""
        for att in message.attachments:
            if att.hm not in self._valid_signatures:
                self._sign(att)
        return message.to_payload()

    def upload_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        ephemeral: bool = True,
        channel_id: int | None = None,
        description: str | None = None,
    ) -> JSON:
        """Store bytes as if a user uploaded them to a slash option/modal; return the attachment object."""
        att = self._store_attachment(
            data, filename, content_type, ephemeral=ephemeral, channel_id=channel_id, description=description
        )
        return att.to_payload()

    def _store_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        *,
        ephemeral: bool,
        channel_id: int | None,
        description: str | None = None,
        title: str | None = None,
    ) -> FakeAttachment:
        att_id = self._ids.next()
        clean = sanitize_filename(filename)
        ctype = sniff_content_type(data, clean, content_type)
        width, height = image_size(data, ctype)
        if ephemeral:
            cdn_path = f"/ephemeral-attachments/{self.application_id}/{att_id}/{clean}"
        else:
            cdn_path = f"/attachments/{channel_id or 0}/{att_id}/{clean}"
        att = FakeAttachment(
            id=att_id,
            filename=clean,
            content_type=ctype,
            data=data,
            cdn_path=cdn_path,
            base_url=self.url,
            ex=0,
            is_=0,
            hm="",
            ephemeral=ephemeral,
            description=description,
            title=title if title is not None else (filename if clean != filename else None),
            width=width,
            height=height,
        )
        self._sign(att)
        self.attachments[att_id] = att
        self._attachments_by_path[cdn_path] = att
        return att

    def _sign(self, att: FakeAttachment) -> None:
        issued = int(time.time())
        att.is_ = issued
        att.ex = issued + CDN_URL_TTL_S
        message = f"{att.cdn_path}|{att.ex}|{att.is_}|{secrets.token_hex(4)}".encode()
        att.hm = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
        self._valid_signatures[att.hm] = (att.id, att.ex)

    # -----------------------------------------------------------------------------------------------------------
    # Gateway payloads
    # -----------------------------------------------------------------------------------------------------------

    def _bot_user_payload(self) -> JSON:
        return {**self.bot_user.to_payload(), "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}

    def _ready_payload(self, session: GatewaySession) -> JSON:
        data: JSON = {
            "v": 10,
            "user": self._bot_user_payload(),
            "user_settings": {},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds if session.receives(gid)],
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east"],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "auth": {},
            "application": {"id": str(self.application_id), "flags": 0},
            "_trace": ['["fake-discord-gateway"]'],
        }
        if session.shard is not None:
            data["shard"] = session.shard
        return data

    def _guild_create_payloads(self, session: GatewaySession) -> list[JSON]:
        """GUILD_CREATE of each available guild on the session's shard."""
        return [
            self._guild_create_payload(g) for g in self.guilds.values() if session.receives(g.id) and not g.unavailable
        ]

    def _guild_payload(self, guild: FakeGuild) -> JSON:
        first_channel = next(iter(guild.channels), None)
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.to_payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None if first_channel is None else str(first_channel),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "incidents_data": None,
        }

    def _guild_create_payload(self, guild: FakeGuild, *, joined: bool = False) -> JSON:
        """GUILD_CREATE's guild: ``"unavailable": false`` backfills a guild of READY or ends an outage; the
        GUILD_CREATE of a guild the bot just joined has no ``unavailable`` (discord.py tells them apart so)."""
        bot_member = guild.members[self.bot_user_id]
        availability: JSON = {} if joined else {"unavailable": False}
        return {
            **self._guild_payload(guild),
            "joined_at": iso(guild.joined_at),
            "large": False,
            **availability,
            "lazy": True,
            "member_count": len(guild.members),
            "voice_states": [],
            # Without the privileged GUILD_MEMBERS intent Discord only sends the bot's own member.
            "members": [guild.member_to_payload(bot_member, self.bot_user)],
            "channels": [self._channel_payload(c) for c in guild.channels.values() if not c.is_thread],
            "threads": [self._channel_payload(c) for c in guild.channels.values() if c.is_thread],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
        }

    def _channel_payload(self, channel: FakeChannel) -> JSON:
        last = None if channel.last_message_id is None else str(channel.last_message_id)
        if channel.is_dm:
            assert channel.recipient_id is not None
            return {
                "id": str(channel.id),
                "type": 1,
                "last_message_id": last,
                "flags": 0,
                "recipients": [self.users[channel.recipient_id].to_payload()],
            }
        if channel.is_thread:
            return self._thread_payload(channel)
        overwrites: list[JSON] = []
        if not channel.bot_can_send:
            overwrites.append(
                {"id": str(self.bot_user_id), "type": 1, "allow": "0", "deny": str(DENIED_WHEN_CANNOT_SEND)}
            )
        payload: JSON = {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": overwrites,
            "parent_id": None if channel.parent_id is None else str(channel.parent_id),
            "topic": channel.topic,
            "nsfw": channel.nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": last,
            "flags": 0,
        }
        if channel.type in (2, 13):  # voice and stage
            payload.update(bitrate=64000, user_limit=0, rtc_region=None)
        return payload

    def _thread_payload(self, thread: FakeChannel) -> JSON:
        """A thread channel object (api-docs resources/channel "Thread-specific fields"); the guild's owner
        started it and it is neither archived nor locked."""
        assert thread.guild_id is not None
        guild = self.guilds.get(thread.guild_id) or self.left_guilds[thread.guild_id]
        messages = sum(1 for m in self.messages.get(thread.id, []) if not m.deleted)
        return {
            "id": str(thread.id),
            "type": thread.type,
            "guild_id": str(thread.guild_id),
            "parent_id": str(thread.parent_id),
            "owner_id": str(guild.owner_id),
            "name": thread.name,
            "last_message_id": None if thread.last_message_id is None else str(thread.last_message_id),
            "rate_limit_per_user": 0,
            "message_count": messages,
            "member_count": 1,
            "total_message_sent": messages,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso(snowflake_time(thread.id)),
                "locked": False,
                "invitable": thread.type != 12,
                "create_timestamp": iso(snowflake_time(thread.id)),
            },
        }

    def _resolved_channel_payload(self, channel: FakeChannel, permissions: int) -> JSON:
        """The partial channel of ``data.resolved.channels``: only the fields api-docs lists for it (threads keep
        their thread fields), with ``permissions`` the invoking member's in that channel."""
        full = self._channel_payload(channel)
        keys = _RESOLVED_CHANNEL_KEYS | (_RESOLVED_THREAD_KEYS if channel.is_thread else frozenset())
        partial = {k: v for k, v in full.items() if k in keys}
        partial.update(permissions=str(permissions), last_pin_timestamp=None)
        return partial

    def _app_permissions(self, guild: FakeGuild, channel: FakeChannel) -> int:
        perms = guild.everyone_permissions | guild.bot_permissions
        if not channel.bot_can_send or channel.id in self._denied_channels:
            perms &= ~DENIED_WHEN_CANNOT_SEND
        return perms

    # -----------------------------------------------------------------------------------------------------------
    # Messages
    # -----------------------------------------------------------------------------------------------------------

    def _store_message(self, msg: FakeMessage) -> None:
        self.messages.setdefault(msg.channel_id, []).append(msg)
        self._messages_by_id[msg.id] = msg
        for att in msg.attachments:
            att.message_id = msg.id
        channel = self.channels.get(msg.channel_id)
        if channel is not None and not msg.ephemeral:
            channel.last_message_id = msg.id
        self._notifier.notify()

    def _echo(self, event: str, msg: FakeMessage) -> None:
        if not self.echo_message_events or msg.ephemeral:
            return
        if event == "MESSAGE_DELETE":
            data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id is not None:
                data["guild_id"] = str(msg.guild_id)
        else:
            data = self.message_payload(msg)
        self._dispatch_soon(event, data, intent=_message_intent(msg))

    def _new_attachments(self, body: JSON, files: list[RecordedFile], channel_id: int) -> dict[int, FakeAttachment]:
        """Attachments for uploaded files, keyed by their ``files[n]`` index."""
        described = {
            int(a["id"]): a
            for a in body.get("attachments") or []
            if isinstance(a, dict) and str(a.get("id", "")).isdigit() and int(a["id"]) < 10_000
        }
        out: dict[int, FakeAttachment] = {}
        for position, recorded in enumerate(files):
            index = file_index(recorded)
            index = position if index is None else index
            meta = described.get(index, {})
            out[index] = self._store_attachment(
                recorded.data,
                str(meta.get("filename") or recorded.filename),
                recorded.content_type,
                ephemeral=False,
                channel_id=channel_id,
                description=meta.get("description"),
                title=meta.get("title"),
            )
        return out

    def _fill_message(self, msg: FakeMessage, body: JSON, files: list[RecordedFile], *, creating: bool) -> None:
        """Apply a create/edit body to ``msg`` (content, embeds, components, flags, attachments)."""
        new_files = self._new_attachments(body, files, msg.channel_id)
        if "attachments" in body and body["attachments"] is not None:
            kept: list[FakeAttachment] = []
            existing = {a.id: a for a in msg.attachments}
            for item in body["attachments"]:
                item_id = int(item["id"])
                if item_id in existing:
                    kept.append(existing[item_id])
                elif item_id in new_files:
                    kept.append(new_files.pop(item_id))
            msg.attachments = kept + list(new_files.values())
        elif new_files:
            msg.attachments = [*msg.attachments, *new_files.values()] if not creating else list(new_files.values())
        if "content" in body:
            msg.content = str(body["content"] or "")
        if "embeds" in body:
            msg.embeds = [self._resolve_media({"type": "rich", **e}, msg) for e in body["embeds"] or []]
        if "components" in body:
            msg.components = self._resolve_media(body["components"] or [], msg)
        if body.get("flags") is not None and not creating:
            keep = msg.flags & (FLAG_EPHEMERAL | FLAG_IS_COMPONENTS_V2)
            msg.flags = keep | (int(body["flags"]) & SETTABLE_MESSAGE_FLAGS & ~FLAG_EPHEMERAL)
        if "allowed_mentions" in body:
            msg.allowed_mentions = body["allowed_mentions"]
        if "poll" in body:
            msg.poll = body["poll"]
        for att in msg.attachments:
            att.message_id = msg.id

    def _edit_message(self, msg: FakeMessage, body: JSON, files: list[RecordedFile]) -> None:
        validate_message_body(
            body, files, creating=False, current_flags=msg.flags, size_limit=self.attachment_size_limit
        )
        was_loading = msg.loading
        msg.history.append(self.message_payload(msg))
        msg.edit_bodies.append(body)
        self._fill_message(msg, body, files, creating=False)
        msg.flags &= ~FLAG_LOADING
        if not was_loading:
            msg.edited_at = utcnow()
        self._notifier.notify()

    def _resolve_media(self, node: Any, msg: FakeMessage) -> Any:
        """Replace ``attachment://name`` URLs (embeds, components v2) with the attachment's CDN URL."""
        if isinstance(node, list):
            return [self._resolve_media(v, msg) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: self._resolve_media(v, msg) for k, v in node.items()}
        url = out.get("url")
        if isinstance(url, str) and url.startswith("attachment://"):
            name = url[len("attachment://") :]
            att = next((a for a in msg.attachments if a.filename in (name, sanitize_filename(name))), None)
            if att is not None:
                out.update(url=att.url, proxy_url=att.proxy_url, content_type=att.content_type)
                out["attachment_id"] = str(att.id)
                if att.width is not None:
                    out.update(width=att.width, height=att.height)
        return out


#: Api-docs, interactions "Resolved Data Structure": the fields of a resolved partial channel.
_RESOLVED_CHANNEL_KEYS = frozenset(
    {
        "id",
        "name",
        "type",
        "last_message_id",
        "nsfw",
        "parent_id",
        "guild_id",
        "flags",
        "rate_limit_per_user",
        "topic",
        "position",
    }
)
#: ...and of a resolved thread: ``thread_metadata``, plus the counts and owner discord.py's AppCommandThread reads.
_RESOLVED_THREAD_KEYS = frozenset(
    {"thread_metadata", "owner_id", "member_count", "message_count", "total_message_sent"}
)


def _message_intent(msg: FakeMessage) -> int:
    return INTENT_DIRECT_MESSAGES if msg.guild_id is None else INTENT_GUILD_MESSAGES
