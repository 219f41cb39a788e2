"""`lorabot check` against the Discord stand-in and the provider simulator on loopback.

The pass case and one failure run the real command in a subprocess; the other failures call the
check functions directly, each breaking one thing and expecting the line that names it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import discord
import httpx
import pytest

from bot.config import Settings
from bot.discord_standin import FakeDiscord
from bot.jobs.service import JobService
from bot.provider.client import ProviderClient
from bot.setup_check import (
    check_config,
    check_database,
    check_discord_commands,
    check_discord_server,
    check_discord_token,
    check_provider_address,
    check_provider_key,
    check_webhook,
    expected_commands,
)
from bot.simulator.app import RunningSimulator, start_simulator
from bot.store import Database, load_migrations
from bot.store.sqlite import SqliteStore
from bot.webhooks import WebhookServer

GUILD = 290926798626357999
CHANNEL = 645027906669510667
API_KEY = "sim-api-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeDiscord, RunningSimulator]]:
    base = discord.http.Route.BASE
    fake = FakeDiscord()
    await fake.start()
    fake.add_guild(GUILD, channels={CHANNEL: "general"})
    sim = await start_simulator(step_seconds=0.05, api_key=API_KEY)
    try:
        yield fake, sim
    finally:
        await sim.close()
        await fake.close()
        discord.http.Route.BASE = base


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], fakes: tuple[FakeDiscord, RunningSimulator]
) -> Callable[..., Settings]:
    """Settings for a setup that passes every check, once the database is migrated and commands synced."""
    fake, sim = fakes
    port = free_port()

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": fake.token,
            "discord_api_base": fake.api_base,
            "discord_guild_id": GUILD,
            "sdapi_key": API_KEY,
            "sdapi_base_url": sim.url,
            "sdapi_timeout_seconds": 5,
            "public_url": f"http://127.0.0.1:{port}",
            "webhook_port": port,
            **overrides,
        }
        return make_settings(**values)

    return build


async def migrate(settings: Settings) -> None:
    db = await Database.open(settings.database_path)
    try:
        await db.migrate()
    finally:
        await db.close()


async def sync_commands(fake: FakeDiscord, settings: Settings, guild_id: int | None = GUILD) -> None:
    """What `lorabot run` does at start-up: PUT this code's commands (in the guild, or globally)."""
    scope = f"/guilds/{guild_id}" if guild_id else ""
    async with httpx.AsyncClient() as http:
        response = await http.put(
            f"{fake.api_base}/applications/{fake.application_id}{scope}/commands",
            json=await expected_commands(settings),
            headers={"Authorization": f"Bot {fake.token}"},
        )
    assert response.status_code == 200, response.text


def check_env(settings: Settings) -> dict[str, str]:
    """The process environment for `lorabot check` with these settings (and nothing from the host)."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(
        DISCORD_TOKEN=settings.discord_token.get_secret_value(),
        DISCORD_API_BASE=settings.discord_api_base,
        DISCORD_GUILD_ID=str(settings.discord_guild_id),
        SDAPI_KEY=settings.sdapi_key.get_secret_value(),
        SDAPI_BASE_URL=settings.sdapi_base_url,
        SDAPI_TIMEOUT_SECONDS="5",
        PUBLIC_URL=str(settings.public_url),
        WEBHOOK_PORT=str(settings.webhook_port),
        DATABASE_URL=settings.database_url,
    )
    return env


async def run_check(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    env = {**env, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "check",  # no .env in tmp_path: the environment only
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def line(output: str, name: str) -> str:
    found = [text for text in output.splitlines() if text[2:].startswith(name + ":")]
    assert len(found) == 1, f"no single line for {name!r} in:\n{output}"
    return found[0]


# -- the command, as an operator runs it -------------------------------------------------------------


async def test_check_passes_on_a_working_setup(
    tmp_path: Path, fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    fake, _sim = fakes
    config = settings()
    await migrate(config)
    await sync_commands(fake, config)

    code, output = await run_check(tmp_path, check_env(config))

    assert code == 0, output
    for name in (
        "configuration",
        "database",
        "Discord token",
        "Discord server",
        "slash commands",
        "provider address",
        "provider key",
        "webhook address",
    ):
        assert line(output, name).startswith("✓ "), output
    assert "/train" in line(output, "slash commands")
    assert "arrived at 127.0.0.1" in line(output, "webhook address")
    assert fake.token not in output
    assert API_KEY not in output


async def test_check_fails_on_a_bad_token_and_says_what_to_do(
    tmp_path: Path, fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    fake, _sim = fakes
    config = settings(discord_token="not-the-token-0123456789")
    await migrate(config)
    await sync_commands(fake, config)

    code, output = await run_check(tmp_path, check_env(config))

    assert code == 1, output
    token = line(output, "Discord token")
    assert token.startswith("✗ ") and "DISCORD_TOKEN" in token and "Reset Token" in token
    assert line(output, "Discord server and slash commands").startswith("- ")
    assert line(output, "provider key").startswith("✓ ")  # the other checks still ran
    assert line(output, "webhook address").startswith("✓ ")
    assert "not-the-token-0123456789" not in output


async def test_check_reports_a_broken_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in {n.upper() for n in Settings.model_fields}}
    code, output = await run_check(tmp_path, {**env, "WEBHOOK_PORT": "nope"})
    assert code == 1
    config = line(output, "configuration")
    assert config.startswith("✗ ")
    for name in ("DISCORD_TOKEN", "SDAPI_KEY", "WEBHOOK_PORT"):
        assert name in config


def test_check_config_lists_every_bad_setting(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SDAPI_BASE_URL", "ftp://nope")
    result, settings = check_config(tmp_path / "missing.env")
    assert settings is None and not result.ok
    assert "DISCORD_TOKEN" in result.detail and "SDAPI_BASE_URL" in result.detail


# -- Discord -------------------------------------------------------------------------------------------


async def test_discord_checks_name_the_bot_and_its_commands(
    fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    fake, _sim = fakes
    config = settings()
    token = await check_discord_token(config)
    assert token.ok and str(fake.application_id) in token.detail and fake.bot_user.username in token.detail

    missing = await check_discord_commands(config)
    assert not missing.ok
    assert "/train is missing" in missing.detail and "/imagine is missing" in missing.detail
    assert missing.fix is not None and "lorabot run" in missing.fix

    await sync_commands(fake, config)
    synced = await check_discord_commands(config)
    assert synced.ok, synced.line()
    for name in ("/train", "/imagine", "/status", "/cancel", "/mymodels", "/forgetme"):
        assert name in synced.detail


async def test_commands_synced_elsewhere_or_stale_are_not_synced(
    fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    fake, _sim = fakes
    config = settings()
    await sync_commands(fake, config, guild_id=None)  # global, but DISCORD_GUILD_ID expects the guild
    assert not (await check_discord_commands(config)).ok
    assert (await check_discord_commands(settings(discord_guild_id=None))).ok

    stale = [c for c in await expected_commands(config) if c["name"] != "imagine"]
    stale[0] = {**stale[0], "options": stale[0]["options"][:1]}
    async with httpx.AsyncClient() as http:
        await http.put(
            f"{fake.api_base}/applications/{fake.application_id}/guilds/{GUILD}/commands",
            json=stale,
            headers={"Authorization": f"Bot {fake.token}"},
        )
    result = await check_discord_commands(config)
    assert "/imagine is missing" in result.detail and f"/{stale[0]['name']} has other options" in result.detail


async def test_server_check_gives_the_invite_when_the_bot_is_in_no_server(
    make_settings: Callable[..., Settings],
) -> None:
    base = discord.http.Route.BASE
    async with FakeDiscord() as fake:
        config = make_settings(discord_token=fake.token, discord_api_base=fake.api_base)
        result = await check_discord_server(config)
        elsewhere = await check_discord_server(make_settings(**{**dict(config), "discord_guild_id": GUILD}))
    discord.http.Route.BASE = base
    assert not result.ok and "no server" in result.detail
    assert result.fix is not None and f"client_id={fake.application_id}" in result.fix
    assert not elsewhere.ok and f"DISCORD_GUILD_ID={GUILD}" in elsewhere.detail


# -- the provider --------------------------------------------------------------------------------------


async def test_provider_checks_pass_against_the_simulator(settings: Callable[..., Settings]) -> None:
    config = settings()
    assert (await check_provider_address(config)).ok
    assert (await check_provider_key(config)).ok


async def test_a_bad_key_is_named(settings: Callable[..., Settings]) -> None:
    config = settings(sdapi_key="another-key-0123456789abcdef")
    assert (await check_provider_address(config)).ok  # the address is right
    result = await check_provider_key(config)
    assert not result.ok
    assert "refused SDAPI_KEY" in result.detail and result.fix is not None and "SDAPI_KEY" in result.fix
    assert "another-key-0123456789abcdef" not in result.line()


async def test_a_redirecting_base_url_is_named_with_its_target(
    fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    _fake, sim = fakes
    sim.simulator.set_faults(redirect_status=301)
    config = settings()
    for check in (check_provider_address, check_provider_key):
        result = await check(config)
        assert not result.ok
        assert f"SDAPI_BASE_URL {sim.url} answers with a redirect (HTTP 301) to {sim.url}/relocated" in result.detail
        assert result.fix is not None and "SDAPI_BASE_URL" in result.fix


async def test_an_address_that_is_not_the_provider_fails(
    fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    fake, _sim = fakes
    wrong = await check_provider_address(settings(sdapi_base_url=fake.api_base.removesuffix("/api/v10")))
    assert not wrong.ok and "without the provider's JSON error" in wrong.detail
    dead = await check_provider_address(settings(sdapi_base_url=f"http://127.0.0.1:{free_port()}"))
    assert not dead.ok and "cannot reach" in dead.detail


# -- the webhook address -------------------------------------------------------------------------------


async def test_webhook_probe_arrives(settings: Callable[..., Settings]) -> None:
    result = await check_webhook(settings())
    assert result.ok, result.line()


async def test_an_unreachable_public_url_fails(settings: Callable[..., Settings]) -> None:
    result = await check_webhook(settings(public_url=f"http://127.0.0.1:{free_port()}"), wait_seconds=5)
    assert not result.ok
    assert "nothing answered" in result.detail
    assert result.fix is not None and "reverse proxy or tunnel" in result.fix


async def test_a_public_url_that_leads_elsewhere_fails(
    fakes: tuple[FakeDiscord, RunningSimulator], settings: Callable[..., Settings]
) -> None:
    _fake, sim = fakes
    result = await check_webhook(settings(public_url=sim.url), wait_seconds=5)  # answers, but isn't us
    assert not result.ok and "never reached" in result.detail
    assert result.fix is not None and "WEBHOOK_HOST:WEBHOOK_PORT" in result.fix


async def test_with_the_bot_running_public_url_must_reach_its_healthz(settings: Callable[..., Settings]) -> None:
    config = settings()
    await migrate(config)
    db = await Database.open(config.database_path)
    store = SqliteStore(db)
    provider = ProviderClient(config.sdapi_base_url, config.sdapi_key.get_secret_value())
    server = WebhookServer(
        JobService(store, provider, config), store, database=store.db, max_body_bytes=65536, rate_per_minute=60
    )
    await server.start(config.webhook_host, config.webhook_port)
    try:
        running = await check_webhook(config)
        elsewhere = await check_webhook(config.model_copy(update={"public_url": f"http://127.0.0.1:{free_port()}"}))
    finally:
        await server.stop()
        await provider.aclose()
        await db.close()
    assert running.ok and "in use by a running bot" in running.detail, running.line()
    assert not elsewhere.ok


async def test_without_public_url_polling_mode_passes(settings: Callable[..., Settings]) -> None:
    result = await check_webhook(settings().model_copy(update={"public_url": None}))
    assert result.ok and "polling mode" in result.detail


# -- the database --------------------------------------------------------------------------------------


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file unwritable, even for root (immutable), and restore it afterwards."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a file read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def test_a_migrated_database_passes(settings: Callable[..., Settings]) -> None:
    config = settings()
    await migrate(config)
    result = await check_database(config)
    assert result.ok, result.line()
    assert f"schema version {load_migrations()[-1].version}" in result.detail


async def test_a_read_only_database_fails(settings: Callable[..., Settings]) -> None:
    config = settings()
    await migrate(config)
    with read_only(Path(config.database_path)):
        result = await check_database(config)
    assert not result.ok and "not writable" in result.detail, result.line()
    assert result.fix is not None and "write" in result.fix


async def test_a_missing_or_old_database_asks_for_migrate(settings: Callable[..., Settings]) -> None:
    config = settings()
    missing = await check_database(config)
    assert not missing.ok and "does not exist" in missing.detail
    assert missing.fix is not None and "lorabot migrate" in missing.fix
    assert not await asyncio.to_thread(os.path.exists, config.database_path)  # the check creates nothing

    db = await Database.open(config.database_path)
    await db.migrate(load_migrations()[:1])
    await db.close()
    old = await check_database(config)
    assert not old.ok and "schema version 1" in old.detail
    assert old.fix is not None and "lorabot migrate" in old.fix


async def test_postgresql_checks_the_schema_and_a_write(settings: Callable[..., Settings]) -> None:
    from bot.store.pg_database import PostgresDatabase, load_postgres_migrations
    from tests.store.conftest import fresh_schema

    async with fresh_schema() as url:
        config = settings(database_url=url)
        empty = await check_database(config)
        assert not empty.ok and "no lorabot tables" in empty.detail, empty.line()
        assert empty.fix is not None and "lorabot migrate" in empty.fix
        db = await PostgresDatabase.open(url)
        try:
            await db.migrate(load_postgres_migrations()[:2])
            old = await check_database(config)
            assert not old.ok and "schema version 2" in old.detail, old.line()
            await db.migrate()
            ready = await check_database(config)
            assert ready.ok and "PostgreSQL" in ready.detail, ready.line()
            assert await db.fetchval("SELECT COUNT(*) FROM kv") == 0  # the probe's write was rolled back
        finally:
            await db.close()


async def test_an_unreachable_postgresql_fails_without_its_password(settings: Callable[..., Settings]) -> None:
    config = settings(database_url="postgresql://bot:s3cret-pw@127.0.0.1:1/lorabot")
    result = await check_database(config)
    assert not result.ok and "DATABASE_URL" in result.detail, result.line()
    assert "s3cret-pw" not in result.line()


async def test_the_advice_for_unsynced_commands_works_for_a_new_application(tmp_path: Path) -> None:
    """`check` says "start the bot" when commands are not synced: that must hold even when the
    database remembers a sync made for another application (a new token)."""
    from bot.app import Application
    from tests.e2e.harness import open_world

    world, close = await open_world(tmp_path)
    other = FakeDiscord(application_id=1150000000000000999)
    await other.start()
    other.add_guild(GUILD, channels={CHANNEL: "general"})
    try:
        assert (await check_discord_commands(world.settings)).ok
        await world.app.stop()
        moved = world.settings.model_copy(
            update={"discord_api_base": other.api_base, "discord_gateway_url": other.gateway_url}
        )
        assert not (await check_discord_commands(moved)).ok
        world.app = Application(moved)
        await world.app.start()
        await other.wait_for(lambda: other.commands(GUILD) or None, 10, "commands synced for the new application")
        assert (await check_discord_commands(moved)).ok
    finally:
        await close()
        await other.close()
