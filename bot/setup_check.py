"""`lorabot check`: is this setup ready to run? Each check spends nothing and returns a result.

Every check is a small async function that takes the settings and returns a `CheckResult`: what
it found, and what to do when it failed. `run_checks` runs them in order and hands each result
to a callback as soon as it is known; the CLI prints them. Nothing here changes anything: the
database is only read (a write is tried inside a transaction that is rolled back), the provider
is asked only for the account's model list, and Discord only for who the bot is, its servers and
its commands.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import sqlite3
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import discord
import httpx
from aiohttp import web

from bot.config import ConfigError, Settings, is_loopback_host, load_settings
from bot.invite import application_info, discord_rest, invite_url
from bot.jobs.provider_errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
)
from bot.provider.client import ProviderClient
from bot.store import DatabaseUnavailable, MigrationError, load_migrations
from bot.store.pg_database import PostgresDatabase, is_postgres_url, load_postgres_migrations, redact_url

Outcome = Literal["ok", "fail", "skip"]

#: The webhook server's path prefix that `check` serves a one-time probe under.
PROBE_PREFIX = "/webhooks/check/"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: its name, whether it passed, what it found, and what to do when it failed."""

    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "fail"

    def line(self, *, ascii_only: bool = False) -> str:
        marks = {"ok": "OK", "fail": "FAIL", "skip": "SKIP"} if ascii_only else {"ok": "✓", "fail": "✗", "skip": "-"}
        text = f"{marks[self.outcome]} {self.name}: {self.detail}"
        if self.fix and self.outcome == "fail":
            text += f" -> {self.fix}" if ascii_only else f" → {self.fix}"
        return text


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "ok", detail)


def _fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "fail", detail, fix)


def _skip(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "skip", detail)


# -- configuration -----------------------------------------------------------------------------


def check_config(env_file: str | Path | None = ".env") -> tuple[CheckResult, Settings | None]:
    """The settings load and validate; on failure, the detail lists every bad setting."""
    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as error:
        problems = [line.strip().removeprefix("- ") for line in str(error).splitlines()[1:] if line.strip()]
        return (
            _fail(
                "configuration",
                "; ".join(problems) or str(error),
                f"fix these settings in the environment or {env_file or '.env'} (.env.example documents each one)",
            ),
            None,
        )
    mode = "webhooks" if settings.public_url else "polling (no PUBLIC_URL)"
    return _ok("configuration", f"valid; following trainings by {mode}"), settings


# -- database ----------------------------------------------------------------------------------


def _inspect_database(path: str) -> tuple[str, tuple[int, str, str | None] | None]:
    """The file's absolute path, and (schema version, integrity_check's first line, the error of a
    rolled-back write or None); None instead of the tuple when the file does not exist."""
    where = os.path.abspath(path)
    if not os.path.exists(where):
        return where, None
    # mode=rw: never create the file (a missing database is reported, not made).
    connection = sqlite3.connect(f"file:{where}?mode=rw", uri=True, isolation_level=None, timeout=5.0)
    try:
        integrity = str(connection.execute("PRAGMA integrity_check").fetchone()[0])
        has_table = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        version = 0
        if has_table:
            row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
            version = int(row[0])
        write_error = None
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("CREATE TABLE lorabot_check_probe (x INTEGER)")
            finally:
                connection.execute("ROLLBACK")
        except sqlite3.Error as error:
            write_error = str(error)
        return where, (version, integrity, write_error)
    finally:
        connection.close()


class _WriteProbeRolledBack(Exception):
    """Raised inside the probe transaction so that its write is rolled back."""


async def check_postgres(settings: Settings) -> CheckResult:
    """PostgreSQL answers, a write in a rolled-back transaction works, and the schema is the newest."""
    name = "database"
    where = redact_url(settings.database_url)
    try:
        newest = load_postgres_migrations()[-1].version
    except MigrationError as error:
        return _fail(name, f"cannot read the migrations: {error}", "reinstall lorabot")
    try:
        db = await PostgresDatabase.open(settings.database_url, min_size=1, max_size=1)
    except DatabaseUnavailable as error:
        return _fail(name, str(error), "check DATABASE_URL, that the server runs, and that this user may log in")
    try:
        version = await db.schema_version()
        write_error = None
        if version:
            try:
                async with db.transaction() as conn:
                    await conn.execute(
                        "INSERT INTO kv (key, value) VALUES ('lorabot.check', 'x') ON CONFLICT DO NOTHING"
                    )
                    raise _WriteProbeRolledBack
            except _WriteProbeRolledBack:
                pass
            except asyncpg.PostgresError as error:
                write_error = str(error)
    finally:
        await db.close()
    if version == 0:
        return _fail(
            name, f"{where} has no lorabot tables yet", "create them: `lorabot migrate` (`lorabot run` also does)"
        )
    problems, fixes = [], []
    if write_error is not None:
        problems.append(f"cannot write ({write_error})")
        fixes.append("grant the bot's database user INSERT/UPDATE/DELETE on its tables")
    if version < newest:
        problems.append(f"schema version {version}, but the newest migration is {newest}")
        fixes.append("run `lorabot migrate` (`lorabot run` also migrates at start)")
    elif version > newest:
        problems.append(f"schema version {version} is newer than this code knows ({newest})")
        fixes.append("upgrade lorabot, or point DATABASE_URL at another database")
    if problems:
        return _fail(name, f"{where}: " + "; ".join(problems), "; ".join(fixes))
    return _ok(name, f"{where}: PostgreSQL, writable, schema version {version} (the newest)")


async def check_database(settings: Settings) -> CheckResult:
    """The database file exists, can be written, is at the newest schema, and passes integrity_check."""
    name = "database"
    if is_postgres_url(settings.database_url):
        return await check_postgres(settings)
    path = settings.database_path
    if path == ":memory:":
        return _ok(name, "in memory: a new, empty database at every start (nothing to check)")
    try:
        newest = load_migrations()[-1].version
    except MigrationError as error:
        return _fail(name, f"cannot read the migrations: {error}", "reinstall lorabot")
    try:
        where, state = await asyncio.to_thread(_inspect_database, path)
    except sqlite3.Error as error:
        return _fail(
            name,
            f"cannot open {path}: {error}",
            "check DATABASE_URL, and that this user may read and write the file and its directory",
        )
    if state is None:
        return _fail(name, f"{where} does not exist yet", "create it: `lorabot migrate` (`lorabot run` also does)")
    version, integrity, write_error = state
    problems, fixes = [], []
    if write_error is not None:
        problems.append(f"{where} is not writable ({write_error})")
        fixes.append("let the bot's user write the file and its directory (SQLite adds -wal and -shm files there)")
    if integrity != "ok":
        problems.append(f"PRAGMA integrity_check says: {integrity}")
        fixes.append("restore the database from a backup")
    if version < newest:
        problems.append(f"schema version {version}, but the newest migration is {newest}")
        fixes.append("run `lorabot migrate` (`lorabot run` also migrates at start)")
    elif version > newest:
        problems.append(f"schema version {version} is newer than this code knows ({newest})")
        fixes.append("upgrade lorabot, or point DATABASE_URL at another database")
    if problems:
        return _fail(name, "; ".join(problems), "; ".join(fixes))
    return _ok(name, f"{where}: writable, schema version {version} (the newest), integrity ok")


# -- Discord -----------------------------------------------------------------------------------


def _discord_failure(name: str, settings: Settings, error: Exception) -> CheckResult:
    if isinstance(error, discord.LoginFailure):
        return _fail(
            name,
            "Discord refused DISCORD_TOKEN (HTTP 401)",
            "in the Developer Portal open your application, Bot → Reset Token, and put the new token in DISCORD_TOKEN",
        )
    if isinstance(error, discord.HTTPException):
        return _fail(
            name,
            f"Discord answered HTTP {error.status} ({error.text or 'no message'})",
            "try again later; if it persists, check DISCORD_API_BASE",
        )
    return _fail(
        name,
        f"cannot reach Discord at {settings.discord_api_base} ({type(error).__name__})",
        "check the network, and DISCORD_API_BASE (normally https://discord.com/api/v10)",
    )


_DISCORD_ERRORS = (discord.DiscordException, aiohttp.ClientError, OSError, TimeoutError)


async def check_discord_token(settings: Settings) -> CheckResult:
    """`GET /users/@me` with the bot token: who the bot is."""
    name = "Discord token"
    try:
        async with discord_rest(settings.discord_api_base, settings.discord_token.get_secret_value()) as (http, me):
            app = await application_info(http)
    except _DISCORD_ERRORS as error:
        return _discord_failure(name, settings, error)
    user = str(me.get("username", "?"))
    if me.get("discriminator") not in (None, "0", "0000"):
        user += f"#{me['discriminator']}"
    return _ok(name, f"logged in as {user} (user id {me.get('id')}, application id {app.get('id')})")


async def check_discord_server(settings: Settings) -> CheckResult:
    """The bot is in a server: DISCORD_GUILD_ID's when set, else at least one."""
    name = "Discord server"
    guild_id = settings.discord_guild_id
    try:
        async with discord_rest(settings.discord_api_base, settings.discord_token.get_secret_value()) as (http, _me):
            app = await application_info(http)
            url = invite_url(int(app["id"]))
            if guild_id is None:
                count = app.get("approximate_guild_count")
                if count == 0:
                    return _fail(name, "the bot is in no server yet", f"invite it: open {url}")
                shown = "at least one server" if count is None else f"{count} server(s)"
                return _ok(name, f"the bot is in {shown}")
            try:
                guild = await http.get_guild(guild_id)
            except (discord.Forbidden, discord.NotFound):
                return _fail(
                    name,
                    f"the bot is not in the server DISCORD_GUILD_ID={guild_id}",
                    f"invite it there: open {url} and pick that server (or fix DISCORD_GUILD_ID)",
                )
    except _DISCORD_ERRORS as error:
        return _discord_failure(name, settings, error)
    return _ok(name, f"the bot is in {guild.get('name', guild_id)!s} (DISCORD_GUILD_ID)")


class _Inert:
    """Stands in for the services while the cogs are loaded only to read their commands: every
    attribute is another `_Inert`, and calling one does nothing."""

    def __getattr__(self, name: str) -> _Inert:
        return self

    def __call__(self, *args: object, **kwargs: object) -> None:
        return None


async def expected_commands(settings: Settings) -> list[dict[str, Any]]:
    """The application commands this code defines, as it would sync them (the cogs' command tree)."""
    from bot.discord_bot import EXTENSIONS, LoraBot, Services
    from bot.jobs.ports import KeyValue

    bot = LoraBot(settings)
    bot.attach(cast(Services, _Inert()), cast(KeyValue, _Inert()))  # a cog's `cog_load` may register with a service
    try:
        for extension in EXTENSIONS:
            await bot.load_extension(extension)
        return [command.to_dict(bot.tree) for command in bot.tree.get_commands()]
    finally:
        await bot.close()


def _shape(command: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    options = command.get("options") or []
    return str(command.get("name")), tuple(sorted(str(option.get("name")) for option in options))


def compare_commands(expected: Iterable[Mapping[str, Any]], synced: Iterable[Mapping[str, Any]]) -> list[str]:
    """What differs between the commands this code defines and those Discord has (names and options)."""
    want = dict(_shape(c) for c in expected)
    have = dict(_shape(c) for c in synced)
    problems = [f"/{n} is missing" for n in sorted(want.keys() - have.keys())]
    problems += [f"/{n} has other options" for n in sorted(want.keys() & have.keys()) if want[n] != have[n]]
    problems += [f"/{n} is not defined by this code" for n in sorted(have.keys() - want.keys())]
    return problems


async def check_discord_commands(settings: Settings) -> CheckResult:
    """The slash commands Discord has (in DISCORD_GUILD_ID, or globally) match this code's."""
    name = "slash commands"
    guild_id = settings.discord_guild_id
    where = f"in the server DISCORD_GUILD_ID={guild_id}" if guild_id else "globally"
    expected = await expected_commands(settings)
    app_id = 0
    try:
        async with discord_rest(settings.discord_api_base, settings.discord_token.get_secret_value()) as (http, _me):
            app_id = int((await application_info(http))["id"])
            if guild_id:
                synced = await http.get_guild_commands(app_id, guild_id)
            else:
                synced = await http.get_global_commands(app_id)
    except (discord.Forbidden, discord.NotFound) as error:
        if not app_id:
            return _discord_failure(name, settings, error)
        return _fail(
            name,
            f"cannot read the commands {where}: the bot is not in that server",
            f"invite it: open {invite_url(app_id)}",
        )
    except _DISCORD_ERRORS as error:
        return _discord_failure(name, settings, error)
    problems = compare_commands(expected, [dict(c) for c in synced])
    if problems:
        return _fail(
            name,
            f"not synced {where}: " + ", ".join(problems),
            "start the bot (`lorabot run`): it syncs its commands at start-up when they differ"
            + ("" if guild_id else "; global commands can take a while to show in Discord's client"),
        )
    names = " ".join(sorted(f"/{c['name']}" for c in expected))
    return _ok(name, f"{len(expected)} synced {where}: {names}")


# -- provider ----------------------------------------------------------------------------------


def _redirect_failure(name: str, settings: Settings, error: ProviderMisconfigured) -> CheckResult:
    return _fail(
        name,
        f"SDAPI_BASE_URL {settings.sdapi_base_url} answers with a redirect (HTTP {error.status_code}) to "
        f"{error.location}, which would drop the request's body",
        "set SDAPI_BASE_URL to the provider's current address (https://modelslab.com)",
    )


def _provider(settings: Settings, key: str) -> ProviderClient:
    return ProviderClient(
        settings.sdapi_base_url, key, timeout=settings.sdapi_timeout_seconds, max_attempts=1, duplicate_window=0
    )


async def check_provider_address(settings: Settings) -> CheckResult:
    """SDAPI_BASE_URL answers like the provider: a request without a key gets its JSON error.

    No key is sent, so a wrong address learns nothing secret.
    """
    name = "provider address"
    client = _provider(settings, "")
    base = settings.sdapi_base_url
    try:
        await client.probe(seconds=min(settings.sdapi_timeout_seconds, 15.0))
    except ProviderMisconfigured as error:
        return _redirect_failure(name, settings, error)
    except (InvalidApiKey, RateLimited, InsufficientCredits):
        return _ok(name, f"{base} answers like the provider (a request without a key gets its JSON error)")
    except RequestRejected as error:
        # The provider's own refusals come at HTTP 200 with `"status": "error"`; a 4xx with or
        # without a body is some other server (a web page, another API, a proxy's 404).
        if error.status_code is not None and error.status_code < 400:
            return _ok(name, f"{base} answers like the provider (a request without a key gets its JSON error)")
        return _fail(
            name,
            f"{client.api_root}/finetune_list answered HTTP {error.status_code} without the provider's JSON error",
            "set SDAPI_BASE_URL to the provider's address (https://modelslab.com), without a path",
        )
    except ProviderUnavailable as error:
        if error.status_code is None:
            return _fail(
                name,
                f"cannot reach {base} ({type(error.__cause__).__name__ if error.__cause__ else 'no answer'})",
                "check SDAPI_BASE_URL and the network",
            )
        return _fail(
            name,
            f"{client.api_root}/finetune_list answered HTTP {error.status_code}, not the provider's JSON",
            "if the provider is down, try again later; otherwise set SDAPI_BASE_URL to its address",
        )
    except ProviderError as error:
        return _fail(name, f"{base}: {error}", "check SDAPI_BASE_URL")
    finally:
        await client.aclose()
    return _fail(
        name,
        f"{base} accepted a request without an API key; the provider refuses those",
        "set SDAPI_BASE_URL to the provider's address (https://modelslab.com)",
    )


async def check_provider_key(settings: Settings) -> CheckResult:
    """SDAPI_KEY works: one read-only call (`finetune_list`, the account's models), nothing spent."""
    name = "provider key"
    client = _provider(settings, settings.sdapi_key.get_secret_value())
    base = settings.sdapi_base_url
    try:
        await client.probe(seconds=min(settings.sdapi_timeout_seconds, 15.0))
    except ProviderMisconfigured as error:
        return _redirect_failure(name, settings, error)
    except InvalidApiKey:
        return _fail(
            name,
            f"{base} refused SDAPI_KEY",
            "copy the API key from your ModelsLab dashboard (API keys) into SDAPI_KEY",
        )
    except InsufficientCredits:
        return _fail(name, "the key works, but the account has no credits", "top up the provider account")
    except RateLimited as error:
        wait = f" in {error.retry_after:.0f} s" if error.retry_after is not None else " in a minute"
        return _fail(name, "the provider asked to slow down before answering", f"run the check again{wait}")
    except ProviderError as error:
        return _fail(name, f"{base}: {error}", "check SDAPI_BASE_URL and the network, then try again")
    finally:
        await client.aclose()
    return _ok(name, f"{base} accepted SDAPI_KEY (the account's model list answered)")


# -- webhook address ---------------------------------------------------------------------------


def _transport_failure(url: str, error: httpx.HTTPError) -> tuple[str, str]:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return (
                f"TLS failed at {url} ({cause.reason or cause})",
                "serve PUBLIC_URL with a certificate valid for its host (Caddy and certbot get one for free)",
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TimeoutException):
        return f"no answer from {url} in time", "check that the reverse proxy or tunnel is running"
    return (
        f"nothing answered at {url} ({type(error).__name__})",
        "check PUBLIC_URL, its DNS, and that the reverse proxy or tunnel is running and reachable",
    )


async def _probe_running_bot(settings: Settings, public_url: str, wait_seconds: float) -> CheckResult:
    """The webhook port is taken (the bot runs): PUBLIC_URL/healthz must reach its /healthz."""
    name = "webhook address"
    url = f"{public_url}/healthz"
    try:
        async with httpx.AsyncClient(timeout=wait_seconds, follow_redirects=False) as http:
            response = await http.get(url)
    except httpx.HTTPError as error:
        detail, fix = _transport_failure(url, error)
        return _fail(name, detail, fix)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "database" in body and "discord" in body:
        return _ok(
            name,
            f"{settings.webhook_host}:{settings.webhook_port} is in use by a running bot, and {url} reaches its "
            f"/healthz (status {body.get('status', response.status_code)})",
        )
    return _fail(
        name,
        f"{settings.webhook_host}:{settings.webhook_port} is in use, and {url} answered HTTP {response.status_code} "
        "without the bot's /healthz",
        "stop whatever holds WEBHOOK_PORT (or change it), or point the proxy at the bot's WEBHOOK_HOST:WEBHOOK_PORT",
    )


async def check_webhook(settings: Settings, *, wait_seconds: float = 10.0) -> CheckResult:
    """A request to PUBLIC_URL arrives at WEBHOOK_HOST:WEBHOOK_PORT (over https, or http on loopback).

    With the port free, a one-time probe path is served there and requested through PUBLIC_URL;
    with the port taken (the bot runs), PUBLIC_URL/healthz must answer with the bot's /healthz.
    """
    name = "webhook address"
    public_url = settings.public_url
    if not public_url:
        interval = getattr(settings, "poll_interval_seconds", 60)
        return _ok(
            name,
            f"PUBLIC_URL is not set: polling mode, one status call per active job every {interval} s "
            "(updates arrive later than with webhooks)",
        )
    parts = urlsplit(public_url)
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        return _fail(name, f"PUBLIC_URL {public_url} is not https", "serve it over https (see docs/setup.md)")

    token = secrets.token_urlsafe(18)
    path = PROBE_PREFIX + token
    arrived: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        arrived.append(request.path)
        if request.path == path:
            return web.json_response({"ok": True, "check": token})
        return web.json_response({"ok": False}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
        try:
            await site.start()
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return await _probe_running_bot(settings, public_url, wait_seconds)
            return _fail(
                name,
                f"cannot listen on {settings.webhook_host}:{settings.webhook_port} ({error.strerror or error})",
                "set WEBHOOK_HOST to an address of this machine and WEBHOOK_PORT to a free port",
            )
        url = public_url + path
        try:
            async with httpx.AsyncClient(timeout=wait_seconds, follow_redirects=False) as http:
                response = await http.post(url, json={"check": token})
        except httpx.HTTPError as error:
            detail, fix = _transport_failure(public_url, error)
            return _fail(name, detail, fix)
    finally:
        await runner.cleanup()
    listen = f"{settings.webhook_host}:{settings.webhook_port}"
    if response.is_redirect:
        return _fail(
            name,
            f"{public_url} answers with a redirect (HTTP {response.status_code}) to "
            f"{response.headers.get('location', 'nowhere')}; the provider's webhooks would not follow it",
            "set PUBLIC_URL to the address the redirect points to (https)",
        )
    if path in arrived and response.status_code == 200:
        how = "over https" if parts.scheme == "https" else "over http on loopback"
        return _ok(name, f"a request to {public_url}/webhooks/... arrived at {listen} {how}")
    if arrived:
        return _fail(
            name,
            f"the request arrived at {listen} as {arrived[0].replace(token, '<probe>')}, not as {PROBE_PREFIX}<probe>",
            "make the proxy forward paths unchanged (strip any path prefix that PUBLIC_URL has)",
        )
    return _fail(
        name,
        f"{public_url} answered HTTP {response.status_code}, but the request never reached {listen}",
        f"point the reverse proxy or tunnel at http://{listen} (WEBHOOK_HOST:WEBHOOK_PORT)",
    )


# -- all of them -------------------------------------------------------------------------------


async def run_checks(settings: Settings, report: Callable[[CheckResult], None]) -> list[CheckResult]:
    """Run every check after the configuration, in order, reporting each result when it is known."""
    results: list[CheckResult] = []

    def add(result: CheckResult) -> CheckResult:
        results.append(result)
        report(result)
        return result

    add(await check_database(settings))
    if add(await check_discord_token(settings)).ok:
        if add(await check_discord_server(settings)).ok:
            add(await check_discord_commands(settings))
        else:
            add(_skip("slash commands", "not checked until the bot is in a server"))
    else:
        add(_skip("Discord server and slash commands", "not checked until the token works"))
    if add(await check_provider_address(settings)).ok:
        add(await check_provider_key(settings))
    else:
        add(_skip("provider key", "not sent until SDAPI_BASE_URL answers like the provider"))
    add(await check_webhook(settings))
    return results
