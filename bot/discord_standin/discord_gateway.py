"""Gateway websocket of the fake Discord: HELLO, IDENTIFY/READY, RESUME, heartbeats and dispatches."""

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
CLOSE_DISALLOWED_INTENTS = 4014
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT
BACKLOG_LIMIT = 2000


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


class FakeGateway:
    """Gateway state: sessions, dispatching and the websocket handler."""

    def __init__(self, fake: FakeDiscord, *, heartbeat_interval_ms: int, enabled_privileged_intents: int) -> None:
        self.fake = fake
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

    def _targets(self, session_id: str | None, intent: int = 0) -> list[GatewaySession]:
        sessions = [s for s in self.sessions.values() if not s.invalidated and (not intent or s.intents & intent)]
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
        """Send ``event`` to every non-invalidated session (buffered for resume while disconnected) that has
        ``intent`` (if given); wait up to ``wait`` seconds for a session when there is none."""
        targets = self._targets(session_id, intent)
        if not targets and wait > 0:
            await self.fake.wait_until_connected(timeout=wait)
            targets = self._targets(session_id, intent)
        for session in targets:
            await self._dispatch_to(session, event, data)
        return len(targets)

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
            for guild_payload in self.fake._guild_create_payloads():
                await self._dispatch_locked(session, "GUILD_CREATE", guild_payload)
            session.ready_sent = True
        self._changed()

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
