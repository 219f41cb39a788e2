"""Loopback helpers for tests that drive the simulator: an image host and a webhook recorder.

Both are tiny aiohttp servers on 127.0.0.1 with a free port, used as async context managers:

    async with ImageHost() as host, WebhookRecorder() as hooks:
        url = host.add_png("1.png")             # a 512x512 PNG at a Discord-CDN-like URL
        ... submit with images=[url], webhook=hooks.url ...
        await hooks.wait_for(8)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from PIL import Image


def png_bytes(width: int = 512, height: int = 512, color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    """A small solid-colour PNG."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(width: int = 512, height: int = 512, color: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="JPEG")
    return out.getvalue()


class _LoopbackServer:
    def __init__(self) -> None:
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ImageHost(_LoopbackServer):
    """Serves registered bytes at `/attachments/<channel>/<id>/<name>` (query strings allowed)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, tuple[bytes, str]] = {}
        #: Every request's path with its raw query string, in arrival order.
        self.requests: list[str] = []
        self.app.router.add_get("/attachments/{channel}/{attachment}/{name}", self._serve)
        self._next_id = 1000

    def add(self, name: str, data: bytes, content_type: str = "image/png", *, query: str = "") -> str:
        """Register a file; returns its URL (with `query` appended, like a signed CDN URL)."""
        self._next_id += 1
        path = f"/attachments/111/{self._next_id}/{name}"
        self.files[path] = (data, content_type)
        return f"{self.base_url}{path}{'?' + query if query else ''}"

    def add_png(self, name: str, width: int = 512, height: int = 512, *, query: str = "") -> str:
        return self.add(name, png_bytes(width, height), "image/png", query=query)

    def missing_url(self, name: str = "gone.png") -> str:
        return f"{self.base_url}/attachments/111/1/{name}"

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.raw_path)
        found = self.files.get(request.path)
        if found is None:
            raise web.HTTPNotFound()
        data, content_type = found
        return web.Response(body=data, content_type=content_type)


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    content_type: str
    raw: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class WebhookRecorder(_LoopbackServer):
    """Records every POST; answers `status_code` (default 200) after `delay` seconds."""

    def __init__(self, *, status_code: int = 200, delay: float = 0.0) -> None:
        super().__init__()
        self.status_code = status_code
        self.delay = delay
        self.received: list[ReceivedWebhook] = []
        self._changed = asyncio.Event()
        self.app.router.add_post("/{tail:.*}", self._receive)

    @property
    def url(self) -> str:
        return f"{self.base_url}/webhooks/training/1/s3cr3t-token"

    @property
    def bodies(self) -> list[Any]:
        return [r.json for r in self.received]

    @property
    def statuses(self) -> list[str]:
        return [str(r.json.get("training_status")) for r in self.received]

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(ReceivedWebhook(request.path, request.content_type, raw, time.time()))
        self._changed.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status_code, text="ok")

    async def wait_for(self, count: int, within: float = 10.0) -> list[Any]:
        """Wait until at least `count` webhooks arrived; returns their JSON bodies."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.received) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.received)} webhook(s) received, expected {count}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)
        return self.bodies
