"""One address in front of several bot processes, as a real deployment puts its load balancer: each
request goes to the next backend in turn, and a backend that refuses the connection (a dead
process) is skipped for the next one. A request cut off mid-way is answered 502, not retried."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Forwarded:
    port: int
    path: str
    body: Any  # the request's JSON (None when it was not JSON)
    status: int


class RoundRobinProxy:
    def __init__(self, backend_ports: Sequence[int]) -> None:
        self.backend_ports = list(backend_ports)
        #: Every request a backend answered, in order.
        self.forwarded: list[Forwarded] = []
        self._turn = itertools.count()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    def to(self, port: int) -> list[Forwarded]:
        return [f for f in self.forwarded if f.port == port]

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._client is not None
        body = await request.read()
        first = next(self._turn)
        for offset in range(len(self.backend_ports)):
            port = self.backend_ports[(first + offset) % len(self.backend_ports)]
            url = f"http://127.0.0.1:{port}{request.rel_url}"
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "user-agent")}
            try:
                async with self._client.request(request.method, url, data=body, headers=headers) as answer:
                    content = await answer.read()
            except aiohttp.ClientConnectorError:
                continue  # nobody listens there: the next backend
            except aiohttp.ClientError:
                return web.Response(status=502, text="the backend went away mid-request")
            parsed: Any = None
            with contextlib.suppress(ValueError):
                parsed = await request.json()
            self.forwarded.append(Forwarded(port, request.path, parsed, answer.status))
            return web.Response(status=answer.status, body=content, content_type=answer.content_type)
        return web.Response(status=502, text="no backend is listening")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()
