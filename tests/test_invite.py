"""`lorabot invite`: the URL that adds the bot to a server, with exactly its scopes and permissions."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock, Mock
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from bot.config import Settings
from bot.discord_bot import LoraBot, Services
from bot.discord_standin import FakeDiscord
from bot.invite import REQUIRED_PERMISSIONS, invite_url
from bot.jobs.ports import KeyValue
from cogs.access import bot_can_post

ROOT = Path(__file__).resolve().parents[1]
#: What the bot does in a server's channels, and so all it asks for (see bot/invite.py).
EXPECTED = {"view_channel", "send_messages", "send_messages_in_threads", "embed_links", "attach_files"}


def granted(permissions: discord.Permissions) -> set[str]:
    """The names of the permissions set (discord.py iterates View Channel as `read_messages`)."""
    return {"view_channel" if name == "read_messages" else name for name, value in permissions if value}


def parse(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qs(parts.query)


def test_invite_url_has_exactly_the_scopes_and_permissions() -> None:
    url = invite_url(1150000000000000001)
    where, query = parse(url)
    assert where == "https://discord.com/oauth2/authorize"
    assert query == {
        "client_id": ["1150000000000000001"],
        "scope": ["bot applications.commands"],
        "permissions": [str(REQUIRED_PERMISSIONS.value)],
    }
    assert "scope=bot+applications.commands&" in url
    assert granted(discord.Permissions(int(query["permissions"][0]))) == EXPECTED


@pytest.mark.parametrize("in_thread", [False, True])
def test_the_invite_grants_what_the_bot_checks_before_posting(in_thread: bool) -> None:
    def can_post(permissions: discord.Permissions) -> bool:
        channel = Mock(spec=discord.Thread) if in_thread else Mock(spec=discord.TextChannel)
        interaction = SimpleNamespace(guild_id=1, app_permissions=permissions, channel=channel)
        return bot_can_post(cast(discord.Interaction, interaction))

    assert can_post(REQUIRED_PERMISSIONS)
    needed_here = {"send_messages_in_threads"} if in_thread else {"send_messages"}
    for name in EXPECTED - ({"send_messages", "send_messages_in_threads"} - needed_here):
        fewer = discord.Permissions(REQUIRED_PERMISSIONS.value)
        setattr(fewer, name, False)
        assert not can_post(fewer), f"{name} is asked for but not needed"


def invite_env(fake: FakeDiscord, **extra: str) -> dict[str, str]:
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    # Only the token and the REST base: no SDAPI_KEY, no PUBLIC_URL.
    env.update({"DISCORD_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base, "PYTHONPATH": str(ROOT), **extra})
    return env


async def run_invite(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "invite",  # no .env in tmp_path: the environment only
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_lorabot_invite_reads_the_application_id_with_the_token(tmp_path: Path) -> None:
    # The application's id differs from the bot user's here, so the URL must come from the application.
    async with FakeDiscord(application_id=1150000000000000777, bot_user_id=1150000000000000888) as fake:
        code, out, err = await run_invite(tmp_path, invite_env(fake))
        asked = [(r.method, r.route) for r in fake.requests]
    assert code == 0, err
    where, query = parse(out.strip())
    assert where == "https://discord.com/oauth2/authorize"
    assert query["client_id"] == ["1150000000000000777"]
    assert query["scope"] == ["bot applications.commands"]
    assert granted(discord.Permissions(int(query["permissions"][0]))) == EXPECTED
    assert ("GET", "/oauth2/applications/@me") in asked
    assert fake.token not in out + err


async def test_lorabot_invite_with_a_bad_token_says_so(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        code, out, err = await run_invite(tmp_path, invite_env(fake, DISCORD_TOKEN="wrong-token-0123456789"))
    assert code == 2 and out == ""  # a configuration error (see `lorabot --help`)
    assert "DISCORD_TOKEN" in err and "wrong-token-0123456789" not in err


async def test_lorabot_invite_without_a_token_names_it(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        env = invite_env(fake)
        del env["DISCORD_TOKEN"]
        code, _out, err = await run_invite(tmp_path, env)
    assert code == 2 and "DISCORD_TOKEN" in err


async def test_run_logs_the_invite_once_when_the_bot_is_in_no_server(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    bot = LoraBot(make_settings())
    restored = AsyncMock()
    services: Any = SimpleNamespace(
        notifier=SimpleNamespace(connection_restored=restored),
        server_settings=SimpleNamespace(reconcile_presence=AsyncMock()),
    )
    bot.attach(cast(Services, services), cast(KeyValue, None))
    bot._connection.application_id = 1150000000000000777
    with caplog.at_level(logging.INFO, logger="bot.discord_bot"):
        await bot.on_ready()
        await bot.on_ready()  # a reconnect without resuming
    await bot.close()
    logged = [r.getMessage() for r in caplog.records if invite_url(1150000000000000777) in r.getMessage()]
    assert len(logged) == 1
    assert restored.await_count == 2
