"""Fixtures of the provider client tests: a client factory on scripted answers, and a sleeper."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.provider.client import ProviderClient
from bot.simulator import RunningSimulator, start_simulator
from bot.simulator.state import tls_context
from bot.simulator.testing import ImageHost, WebhookRecorder
from tests.provider.scripted import BASE, KEY, MakeClient, MaxRandom, Script, Sleeper, Step
from tests.provider.simulated import LOOPBACK_HOSTS, STEP


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
async def make(sleeper: Sleeper) -> AsyncIterator[MakeClient]:
    """`make(*answers, images=Script(...), **client_options)` -> (client, script of its requests)."""
    clients: list[ProviderClient] = []

    def factory(*steps: Step, images: Script | None = None, **options: Any) -> tuple[ProviderClient, Script]:
        script = Script(*steps)
        options.setdefault("rng", MaxRandom())
        options.setdefault("sleep", sleeper)
        options.setdefault("duplicate_window", 0)  # every call goes out; the reuse has its own tests
        if images is not None:
            options["image_transport"] = httpx.MockTransport(images)
        client = ProviderClient(options.pop("base_url", BASE), KEY, transport=httpx.MockTransport(script), **options)
        clients.append(client)
        return client, script

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may reach past this machine, not even a DNS lookup."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in LOOPBACK_HOSTS:
            raise OSError(f"test tried to resolve {name!r}: only loopback is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
async def running() -> AsyncIterator[RunningSimulator]:
    async with await start_simulator(step_seconds=STEP) as sim:
        yield sim


@pytest.fixture
async def host() -> AsyncIterator[ImageHost]:
    async with ImageHost() as server:
        yield server


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookRecorder]:
    async with WebhookRecorder() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False, verify=tls_context()) as client:
        yield client
