"""Gateway websocket of the fake Discord: HELLO, IDENTIFY/READY, RESUME, heartbeats and dispatches.

Sharding works as Discord documents it: an IDENTIFY with ``shard: [shard_id, num_shards]`` gets the
events of the guilds with ``(guild_id >> 22) % num_shards == shard_id`` only (READY and GUILD_CREATE
included), and events without a guild (DMs) go to shard 0. A session without ``shard`` is shard 0 of 1:
everything. Several sessions may run shard 0 of 1 (each gets every event), but a shard of a sharded
bot (``num_shards > 1``) is refused while another connection runs it (4010), so overlapping shard sets
of several processes show up at once; Discord itself would serve both.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .discord_models import GatewayEvent
from .discord_payloads import JSON

if TYPE_CHECKING:
    from .discord_server import FakeDiscord

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_ALREADY_AUTHENTICATED = 4005
CLOSE_INVALID_SHARD = 4010
CLOSE_SHARDING_REQUIRED = 4011
CLOSE_DISALLOWED_INTENTS = 4014
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT
BACKLOG_LIMIT = 2000
#: Events whose guild is the payload's ``id`` (the others name it ``guild_id``).
_GUILD_EVENTS = frozenset({"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"})


def shard_for(guild_id: int, num_shards: int) -> int:
    """The shard that gets a guild's events (Discord's sharding formula)."""
    return (guild_id >> 22) % num_shards


def event_guild(event: str, data: JSON) -> int | None:
    """The guild an event belongs to; None for events without one (DMs), which go to shard 0."""
    raw = data.get("id") if event in _GUILD_EVENTS else data.get("guild_id")
    return int(raw) if raw is not None else None


def _shard_key(identify: JSON) -> tuple[int, int] | None:
    """``(shard_id, num_shards)`` of a valid IDENTIFY ``shard`` (absent: 0 of 1); None when invalid."""
    shard = identify.get("shard")
    if shard is None:
        return 0, 1
    if not isinstance(shard, list) or len(shard) != 2 or not all(type(n) is int for n in shard):
        return None
    shard_id, num_shards = shard
    return (shard_id, num_shards) if 0 <= shard_id < num_shards else None


class GatewayConnection:
    """One websocket connection; serialises sends (and the zlib-stream context)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, compress: bool) -> None:
        self.ws = ws
        self.request = request
        self.compressor = zlib.compressobj() if compress else None
        self.send_lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.closed_by_server = False

    @property
    def open(self) -> bool:
        return not self.ws.closed

    async def send(self, payload: JSON) -> None:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        async with self.send_lock:
            if self.ws.closed:
                return
            try:
                if self.compressor is not None:
                    data = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; the read loop notices and unbinds

    async def close(self, code: int, message: str = "") -> None:
        self.closed_by_server = True
        await self.ws.close(code=code, message=message.encode())

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a network failure)."""
        self.closed_by_server = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()


@dataclass
class GatewaySession:
    """A gateway session (survives disconnects so it can be RESUMEd)."""

    session_id: str
    identify: JSON
    seq: int = 0
    backlog: list[tuple[int, JSON]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    invalidated: bool = False
    resumes: int = 0
    heartbeats: int = 0
    ready_sent: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def live(self) -> bool:
        """Connected and past READY/RESUMED."""
        return self.connection is not None and self.connection.open and self.ready_sent and not self.invalidated

    @property
    def intents(self) -> int:
        return int(self.identify.get("intents") or 0)

    @property
    def shard(self) -> list[int] | None:
        shard = self.identify.get("shard")
        return list(shard) if shard else None

    @property
    def shard_id(self) -> int:
        """The shard this session runs (0 when it did not ask for one)."""
        return self.shard[0] if self.shard else 0

    @property
    def num_shards(self) -> int:
        """The bot's number of shards as this session declared it (1 when it did not)."""
        return self.shard[1] if self.shard else 1

    def receives(self, guild_id: int | None) -> bool:
        """Whether this session gets the events of ``guild_id`` (None: events without a guild)."""
        if guild_id is None:
            return self.shard_id == 0
        return shard_for(guild_id, self.num_shards) == self.shard_id


class FakeGateway:
    """Gateway state: sessions, dispatching and the websocket handler."""

    def __init__(
        self,
        fake: FakeDiscord,
        *,
        heartbeat_interval_ms: int,
        enabled_privileged_intents: int,
        shard_count: int = 1,
        require_sharding: bool = False,
    ) -> None:
        self.fake = fake
        #: What ``GET /gateway/bot`` recommends as ``shards``.
        self.shard_count = shard_count
        #: When true, an IDENTIFY that declares fewer than ``shard_count`` shards is closed with 4011
        #: (Discord does so when a session would handle too many guilds).
        self.require_sharding = require_sharding
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.enabled_privileged_intents = enabled_privileged_intents
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[GatewayConnection] = []
        self.events: list[GatewayEvent] = []
        self.refused_connections = 0
        self.identify_count = 0
        self.resume_count = 0
        self.ready = asyncio.Event()

    # -- queries ---------------------------------------------------------------------------------------------------

    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if s.live]

    def live_shards(self) -> dict[int, GatewaySession]:
        """Live sessions by the shard they run (the newest one when several run shard 0 of 1)."""
        return {s.shard_id: s for s in self.live_sessions()}

    def sessions_for(self, guild_id: int | None) -> list[GatewaySession]:
        """Non-invalidated sessions that get the events of ``guild_id`` (None: DMs and other guildless events)."""
        return [s for s in self.sessions.values() if not s.invalidated and s.receives(guild_id)]

    def _targets(self, guild_id: int | None, session_id: str | None, intent: int = 0) -> list[GatewaySession]:
        sessions = [s for s in self.sessions_for(guild_id) if not intent or s.intents & intent]
        if session_id is not None:
            sessions = [s for s in sessions if s.session_id == session_id]
        return sessions

    def _changed(self) -> None:
        if self.live_sessions():
            self.ready.set()
        else:
            self.ready.clear()
        self.fake._notifier.notify()

    # -- dispatching -----------------------------------------------------------------------------------------------

    async def dispatch(
        self, event: str, data: JSON, *, session_id: str | None = None, wait: float = 10.0, intent: int = 0
    ) -> int:
        """Send ``event`` to every non-invalidated session of the event's shard (buffered for resume while
        disconnected) that has ``intent`` (if given); wait up to ``wait`` seconds for a live session of that
        shard when there is none."""
        guild_id = event_guild(event, data)
        targets = self._targets(guild_id, session_id, intent)
        if not targets and wait > 0:
            await self.fake._notifier.wait_for(
                lambda: [s for s in self._targets(guild_id, session_id) if s.live],
                wait,
                lambda: f"a live gateway session for {event} of guild {guild_id} (live shards: {self._shards_text()})",
            )
            targets = self._targets(guild_id, session_id, intent)
        for session in targets:
            await self._dispatch_to(session, event, data)
        return len(targets)

    def _shards_text(self) -> str:
        live = sorted(f"{s.shard_id}/{s.num_shards}" for s in self.live_sessions())
        return ", ".join(live) or "none"

    async def _dispatch_to(self, session: GatewaySession, event: str, data: JSON) -> None:
        async with session.lock:
            await self._dispatch_locked(session, event, data)

    async def _dispatch_locked(self, session: GatewaySession, event: str, data: JSON) -> None:
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.backlog.append((session.seq, frame))
        if len(session.backlog) > BACKLOG_LIMIT:
            del session.backlog[: len(session.backlog) - BACKLOG_LIMIT]
        conn = session.connection
        if conn is not None and conn.open:
            await conn.send(frame)

    async def send_op(self, op: int, data: Any = None, *, session_id: str | None = None) -> None:
        """Send a raw non-dispatch opcode (e.g. 7 RECONNECT, 9 INVALID_SESSION) to live sessions."""
        for session in self.live_sessions():
            if session_id is None or session.session_id == session_id:
                assert session.connection is not None
                await session.connection.send({"op": op, "d": data, "s": None, "t": None})

    # -- faults ----------------------------------------------------------------------------------------------------

    def drop_all(self) -> None:
        """Abort every connection (sessions stay resumable)."""
        for conn in list(self.connections):
            conn.abort()

    async def close_all(self, code: int = 1001) -> None:
        for conn in list(self.connections):
            if conn.open:
                await conn.close(code)

    # -- websocket handler -----------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.fake.unreachable:
            self.refused_connections += 1
            self.fake._notifier.notify()
            return web.Response(status=503, text="upstream connect error")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=0, compress=False)
        await ws.prepare(request)
        conn = GatewayConnection(ws, request, compress=request.query.get("compress") == "zlib-stream")
        self.connections.append(conn)
        try:
            await conn.send({"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_message(conn, json.loads(msg.data))
                elif msg.type is WSMsgType.BINARY:
                    await self._on_message(conn, json.loads(zlib.decompress(msg.data)))
                else:
                    break
        except ConnectionError:
            pass
        finally:
            self.connections.remove(conn)
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
                close_code = ws.close_code
                if not conn.closed_by_server and close_code in (1000, 1001):
                    session.invalidated = True  # a clean client close ends the session
            self._changed()
        return ws

    async def _on_message(self, conn: GatewayConnection, msg: JSON) -> None:
        op = msg.get("op")
        data = msg.get("d")
        session_id = conn.session.session_id if conn.session else None
        loop_time = asyncio.get_running_loop().time()
        self.events.append(GatewayEvent(session_id=session_id, op=int(op or 0), data=data, time=loop_time))
        if op == OP_HEARTBEAT:
            if conn.session is not None:
                conn.session.heartbeats += 1
            await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            await self._resume(conn, data or {})
        self.fake._notifier.notify()

    async def _identify(self, conn: GatewayConnection, data: JSON) -> None:
        if conn.session is not None:
            await conn.close(CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if data.get("token") != self.fake.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        refusal = self._shard_refusal(data)
        if refusal is not None:
            await conn.close(*refusal)
            return
        intents = int(data.get("intents") or 0)
        if intents & PRIVILEGED_INTENTS & ~self.enabled_privileged_intents:
            await conn.close(CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        self.identify_count += 1
        session = GatewaySession(session_id=secrets.token_hex(16), identify=data)
        self.sessions[session.session_id] = session
        async with session.lock:
            session.connection = conn
            conn.session = session
            await self._dispatch_locked(session, "READY", self.fake._ready_payload(session))
            for guild_payload in self.fake._guild_create_payloads(session):
                await self._dispatch_locked(session, "GUILD_CREATE", guild_payload)
            session.ready_sent = True
        self._changed()

    def _shard_refusal(self, identify: JSON) -> tuple[int, str] | None:
        """The close code and reason for an IDENTIFY whose ``shard`` Discord (or the stand-in) refuses."""
        key = _shard_key(identify)
        if key is None:
            return CLOSE_INVALID_SHARD, "Invalid shard."
        shard_id, num_shards = key
        if self.require_sharding and num_shards < self.shard_count:
            return CLOSE_SHARDING_REQUIRED, "Sharding required."
        if num_shards > 1 and any(
            s.shard_id == shard_id and s.num_shards == num_shards and s.connection is not None and s.connection.open
            for s in self.sessions.values()
            if not s.invalidated
        ):
            return CLOSE_INVALID_SHARD, "Invalid shard."  # the stand-in's own rule: see the module docstring
        return None

    async def _resume(self, conn: GatewayConnection, data: JSON) -> None:
        if data.get("token") != self.fake.token:
            await conn.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or session.invalidated:
            await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        self.resume_count += 1
        last_seq = int(data.get("seq") or 0)
        async with session.lock:
            old = session.connection
            if old is not None and old is not conn and old.open:
                old.abort()
            session.connection = conn
            conn.session = session
            session.resumes += 1
            for seq, frame in session.backlog:
                if seq > last_seq:
                    await conn.send(frame)
            await self._dispatch_locked(session, "RESUMED", {"_trace": ['["fake-discord-gateway"]']})
            session.ready_sent = True
        self._changed()
