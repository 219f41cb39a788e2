"""The real `lorabot run` against the Discord stand-in: a rejected token is a fatal stop with a
non-zero exit and one line naming DISCORD_TOKEN; /healthz says "starting" until Discord is ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.discord_standin import FakeDiscord
from tests.e2e.harness import BotProcess, open_fakes


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeDiscord, Any]]:
    fake, sim = await open_fakes()
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()


async def test_a_rejected_token_exits_2_with_one_line_naming_discord_token(tmp_path, fakes) -> None:
    fake, sim = fakes
    wrong = "not-the-bot-token-0123456789abcdef"
    bot = BotProcess(tmp_path, fake, sim.url, DISCORD_TOKEN=wrong)
    await bot.start()
    try:
        code = await asyncio.wait_for(bot.proc.wait(), 30)  # type: ignore[union-attr]
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            await bot.kill()
    log = bot.log
    assert code == 2, log
    lines = [line for line in log.splitlines() if line.startswith("DISCORD_TOKEN:")]
    assert len(lines) == 1, log
    assert "rejected" in lines[0] and "Developer Portal" in lines[0]
    assert "Traceback" not in log and "CRITICAL" not in log
    assert wrong not in log
    assert len([r for r in fake.requests if r.route == "/users/@me"]) == 1  # not retried


async def healthz(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz")
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


async def test_healthz_is_starting_until_discord_is_ready_then_ok(tmp_path, fakes) -> None:
    fake, sim = fakes
    fake.set_unreachable(True)  # Discord answers 503 for now
    bot = BotProcess(tmp_path, fake, sim.url)
    await bot.start()
    try:
        answer = None
        for _ in range(300):
            answer = await healthz(bot.port)
            if answer is not None and f"cannot reach Discord at 127.0.0.1:{fake.port}" in bot.log:
                break
            await asyncio.sleep(0.1)
        assert answer is not None, bot.log
        status, body = answer
        assert (status, body["status"], body["waiting_for"]) == (503, "starting", ["discord"]), body
        assert body["database"] is True

        fake.set_unreachable(False)
        await fake.wait_until_connected(30)
        for _ in range(300):
            answer = await healthz(bot.port)
            if answer is not None and answer[0] == 200:
                break
            await asyncio.sleep(0.1)
        assert answer is not None
        status, body = answer
        assert (status, body["status"]) == (200, "ok"), body
        assert "waiting_for" not in body and body["discord"] == "connected"
    finally:
        code = await bot.stop()
    assert code == 0, bot.log
    assert "voice will NOT be supported" not in bot.log
