"""A real ProviderClient on scripted HTTP answers (httpx.MockTransport), shared by the client tests."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import httpx

from bot.provider.client import ProviderClient

KEY = "sk-TEST-9f8e7d6c5b4a3210-secretkey"
BASE = "https://stablediffusionapi.com"

Step = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler that plays scripted answers in order and records the requests."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected request {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    @property
    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    @property
    def urls(self) -> list[str]:
        return [str(request.url) for request in self.requests]

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(request.content) for request in self.requests]


class Sleeper:
    """Replaces asyncio.sleep: records the delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class MaxRandom(random.Random):
    """Jitter at its upper bound, so the exponential ceiling itself is observable."""

    def uniform(self, a: float, b: float) -> float:
        return b


MakeClient = Callable[..., tuple[ProviderClient, Script]]


def ok(payload: object, status: int = 200, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, json=payload, **kwargs)
