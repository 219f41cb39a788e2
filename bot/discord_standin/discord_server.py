"""A fake Discord (REST + CDN + gateway) on loopback, driven by the real discord.py client.

Usage::

    async with FakeDiscord() as fake:
        fake.add_guild(GUILD, channels={CHANNEL: "general"})
        with pointed_at(fake):
            ...  # start a discord.py client with token=fake.token
            await fake.wait_until_connected()
            rec = await fake.send_interaction(fake.slash_command_payload("ping", user_id=U, guild_id=GUILD,
                                                                           channel_id=CHANNEL))
            await rec.wait_callback()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import discord
import yarl
from aiohttp import web

from .discord_builders import InteractionBuilders
from .discord_gateway import FakeGateway, GatewaySession
from .discord_handlers import RestHandlers
from .discord_models import InteractionRecord, RecordedFile, RecordedRequest
from .discord_payloads import DEFAULT_ATTACHMENT_SIZE_LIMIT, INTERACTION_DEADLINE_S, JSON
from .discord_rest import API_PREFIX, ApiError, Reply, Router, json_response, parse_body
from .discord_state import FakeState, _message_intent

__all__ = ["FakeDiscord", "pointed_at"]

_log = logging.getLogger(__name__)

DEFAULT_APPLICATION_ID = 1_150_000_000_000_000_001
DEFAULT_OWNER_ID = 1_150_000_000_000_000_100


@dataclass
class _Fault:
    name: str
    method: str | None
    regex: re.Pattern[str]
    remaining: int
    reply: Callable[[], Reply]


@contextlib.contextmanager
def pointed_at(fake: FakeDiscord) -> Iterator[FakeDiscord]:
    """Point discord.py's REST base and default gateway at ``fake``; restore both on exit."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


class FakeDiscord(InteractionBuilders, RestHandlers):
    """Fake Discord: REST API under ``/api/v10``, CDN under ``/cdn`` and ``/media``, gateway at ``/gateway``."""

    def __init__(
        self,
        *,
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user_id: int | None = None,
        token: str = "fake-bot-token",  # noqa: S107 - the stand-in's own, not a credential
        bot_username: str = "LoraBot",
        owner_id: int = DEFAULT_OWNER_ID,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval_ms: int = 41_250,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        interaction_deadline: float | None = INTERACTION_DEADLINE_S,
        enabled_privileged_intents: int = 0,
        echo_message_events: bool = True,
        shard_count: int = 1,
        require_sharding: bool = False,
    ) -> None:
        super().__init__(
            application_id=application_id,
            bot_user_id=bot_user_id,
            token=token,
            bot_username=bot_username,
            owner_id=owner_id,
            host=host,
            port=port,
            attachment_size_limit=attachment_size_limit,
            interaction_deadline=interaction_deadline,
            echo_message_events=echo_message_events,
        )
        self.gateway = FakeGateway(
            self,
            heartbeat_interval_ms=heartbeat_interval_ms,
            enabled_privileged_intents=enabled_privileged_intents,
            shard_count=shard_count,
            require_sharding=require_sharding,
        )
        self._runner: web.AppRunner | None = None
        self._faults: list[_Fault] = []
        self._unreachable_mode: Literal["503", "drop"] = "503"
        self._router = Router()
        self._register_routes()

    # -----------------------------------------------------------------------------------------------------------
    # Lifecycle
    # -----------------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to ``host`` on a free port and start serving."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self._handle_http)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1])

    async def close(self) -> None:
        """Drop every connection and stop the server."""
        for task in list(self._tasks):
            task.cancel()
        self.gateway.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    ws_url = FakeState.gateway_url

    @property
    def ready(self) -> asyncio.Event:
        """Set while at least one gateway session is connected and past READY/RESUMED."""
        return self.gateway.ready

    @property
    def sessions(self) -> list[GatewaySession]:
        return list(self.gateway.sessions.values())

    # -----------------------------------------------------------------------------------------------------------
    # Faults
    # -----------------------------------------------------------------------------------------------------------

    def close_dms(self, user_id: int) -> None:
        """Messages to this user's DM channel answer 403 50007."""
        self._ensure_user(user_id).dms_open = False

    def open_dms(self, user_id: int) -> None:
        self._ensure_user(user_id).dms_open = True

    def deny_channel(self, channel_id: int, *, code: Literal[50013, 50001] = 50013) -> None:
        """Bot-token message creates in this channel answer 403 50013 Missing Permissions; with ``code=50001``
        (Missing Access) GET channel and message edits fail too."""
        self._denied_channels[channel_id] = code

    def allow_channel(self, channel_id: int) -> None:
        self._denied_channels.pop(channel_id, None)

    def delete_message(self, channel_id: int, message_id: int) -> None:
        """Delete as a user would: later GET/PATCH/DELETE answer 404 10008; MESSAGE_DELETE is dispatched."""
        msg = self._messages_by_id[message_id]
        if msg.channel_id != channel_id:
            raise KeyError(f"message {message_id} is not in channel {channel_id}")
        msg.deleted = True
        self._notifier.notify()
        data: JSON = {"id": str(message_id), "channel_id": str(channel_id)}
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
        if not msg.ephemeral:
            self._dispatch_soon("MESSAGE_DELETE", data, intent=_message_intent(msg))

    def fail_next(
        self,
        path_regex: str,
        *,
        status: int,
        code: int = 0,
        message: str = "fault",
        count: int = 1,
        method: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The next ``count`` requests whose path (without /api/v10) matches answer ``status``."""
        reply_body = body if body is not None else {"message": message, "code": code}
        reply_headers = dict(headers or {})
        self._faults.append(
            _Fault(
                name=f"fail_next({status})",
                method=method.upper() if method else None,
                regex=re.compile(path_regex),
                remaining=count,
                reply=lambda: Reply(status, reply_body, dict(reply_headers)),
            )
        )

    def rate_limit_next(
        self,
        path_regex: str,
        retry_after: float = 0.2,
        count: int = 1,
        *,
        method: str | None = None,
        is_global: bool = False,
        scope: Literal["user", "global", "shared"] = "user",
    ) -> None:
        """The next ``count`` matching requests answer 429 with ``Via``, X-RateLimit-* headers and a JSON body."""

        def reply() -> Reply:
            headers = {
                "Retry-After": str(math.ceil(retry_after)),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": hashlib.md5(path_regex.encode(), usedforsecurity=False).hexdigest()[:16],
                "X-RateLimit-Scope": "global" if is_global else scope,
            }
            if is_global:
                headers["X-RateLimit-Global"] = "true"
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
            return Reply(429, body, headers)

        self._faults.append(
            _Fault(
                name="rate_limit",
                method=method.upper() if method else None,
                regex=re.compile(path_regex),
                remaining=count,
                reply=reply,
            )
        )

    def expire_interaction_tokens(self) -> None:
        """Every interaction token issued so far is now expired (webhook calls → 401 50027)."""
        for rec in self.interactions.values():
            rec.token_expired = True

    def expire_attachment_urls(self) -> None:
        """Every signed CDN URL issued so far stops working (404); fetching the message re-signs."""
        self._valid_signatures.clear()

    def set_unreachable(self, unreachable: bool = True, *, mode: Literal["503", "drop"] = "503") -> None:
        """While unreachable: REST/CDN answer 503 (or drop the connection), gateway sessions are dropped
        (resumable) and new gateway connections are refused with 503."""
        self.unreachable = unreachable
        self._unreachable_mode = mode
        if unreachable:
            self.gateway.drop_all()
        self._notifier.notify()

    async def force_reconnect(self, *, session_id: str | None = None) -> None:
        """Send op 7 RECONNECT (discord.py reconnects and RESUMEs)."""
        await self.gateway.send_op(7, None, session_id=session_id)

    async def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION to live sessions."""
        if not resumable:
            for session in self.gateway.live_sessions():
                session.invalidated = True
        await self.gateway.send_op(9, resumable)

    # -----------------------------------------------------------------------------------------------------------
    # Interactions and dispatch
    # -----------------------------------------------------------------------------------------------------------

    def register_interaction(self, payload: JSON) -> InteractionRecord:
        """Track an interaction payload without dispatching it (for direct ``parse_interaction_create``)."""
        rec = InteractionRecord(fake=self, payload=payload, created_at=asyncio.get_running_loop().time())
        self.interactions[rec.id] = rec
        self._interactions_by_token[rec.token] = rec
        return rec

    async def send_interaction(self, payload: JSON, *, session_id: str | None = None) -> InteractionRecord:
        """Dispatch INTERACTION_CREATE on the shard of its guild (shard 0 for a DM), waiting up to 10 s for a
        gateway session there, and return its record."""
        if not self.gateway.live_sessions() and not any(not s.invalidated for s in self.sessions):
            await self.wait_until_connected()
        rec = self.register_interaction(payload)
        await self.gateway.dispatch("INTERACTION_CREATE", payload, session_id=session_id)
        return rec

    async def dispatch(self, event: str, data: JSON, *, session_id: str | None = None) -> None:
        """Dispatch any gateway event (op 0) to every session of its guild's shard (shard 0 without a guild)."""
        await self.gateway.dispatch(event, data, session_id=session_id)

    # -----------------------------------------------------------------------------------------------------------
    # HTTP entry point
    # -----------------------------------------------------------------------------------------------------------

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        loop_time = asyncio.get_running_loop().time()
        is_cdn = request.path.startswith(("/cdn/", "/media/"))
        body: Any = None
        files: list[RecordedFile] = []
        if request.method not in ("GET", "HEAD") and request.body_exists:
            body, files = await parse_body(request)
        path = request.path[len(API_PREFIX) :] if request.path.startswith(API_PREFIX + "/") else request.path
        route, params, path_known = (None, {}, False) if is_cdn else self._router.match(request.method, path)
        rec = RecordedRequest(
            method=request.method,
            raw_path=request.path,
            path=path,
            route=route.template if route else ("/cdn" if is_cdn else None),
            params=params,
            query=dict(request.query),
            headers=dict(request.headers),
            json=body,
            files=files,
            time=loop_time,
        )
        (self.cdn_requests if is_cdn else self.requests).append(rec)
        try:
            if self.unreachable:
                if self._unreachable_mode == "drop":
                    rec.fault = "unreachable-drop"
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError
                rec.fault = "unreachable"
                rec.status = 503
                return web.Response(status=503, text="upstream connect error or disconnect/reset before headers")
            if is_cdn:
                return await self._serve_cdn(request, rec)
            reply = self._take_fault(rec)
            if reply is None:
                reply = await self._route(rec, route, path_known)
            rec.status = reply.status
            rec.response = reply.body
            return json_response(reply)
        finally:
            self._notifier.notify()

    def _take_fault(self, rec: RecordedRequest) -> Reply | None:
        for fault in self._faults:
            if fault.remaining <= 0:
                continue
            if fault.method is not None and fault.method != rec.method:
                continue
            if fault.regex.search(rec.path) is None:
                continue
            fault.remaining -= 1
            rec.fault = fault.name
            reply = fault.reply()
            self._faults = [f for f in self._faults if f.remaining > 0]
            return reply
        return None

    async def _route(self, rec: RecordedRequest, route: Any, path_known: bool) -> Reply:
        if route is None:
            if path_known:
                return Reply(405, {"message": "405: Method Not Allowed", "code": 0})
            return Reply(404, {"message": "404: Not Found", "code": 0})
        if route.auth and not rec.is_bot_authorized(self.token):
            return Reply(401, {"message": "401: Unauthorized", "code": 0})
        try:
            result: Reply = await route.handler(rec)
        except ApiError as exc:
            return Reply(exc.status, exc.body)
        except Exception as exc:
            # A bug in the fake: answer 400 (discord.py would retry a 5xx with long sleeps) and keep it.
            _log.exception("fake Discord handler failed for %s %s", rec.method, rec.path)
            self.errors.append(exc)
            return Reply(400, {"message": f"fake Discord internal error: {exc!r}", "code": 0})
        return result
