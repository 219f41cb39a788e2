"""The `lorabot` command: run the bot, apply migrations, or serve the provider simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config import ConfigError, Settings, load_settings
from bot.envfile import (
    DEFAULT_ENV_FILE,
    EnvFileMissing,
    describe_database,
    describe_env_file,
    misspelt_keys,
    resolve_env_file,
)
from bot.logging_setup import setup_logging

log = logging.getLogger("bot.cli")

#: Exit statuses, for `lorabot --help`, service managers and scripts (docs/operations.md).
EXIT_CODES = """\
exit status:
  0  done, or stopped cleanly (SIGTERM, Ctrl-C)
  1  an unexpected error (its traceback is printed), `check` found a problem, or `copy-database`
     found the copy's row counts differ from the source's
  2  a configuration error: a setting, an argument or the machine's setup must change (the one-line
     message names it: e.g. DATABASE_URL unwritable, WEBHOOK_PORT busy, DISCORD_TOKEN rejected);
     starting again unchanged will fail the same way
  3  the database cannot be used by this version (a failed migration, or a schema newer than this release)
"""
ENV_FILE_HELP = f"the settings file to read (it must exist); default: ./{DEFAULT_ENV_FILE} if there is one"


class _DatabaseOnly(BaseSettings):
    """`lorabot migrate` needs only DATABASE_URL, not the Discord token or the API key."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
    database_url: str = "sqlite:///lorabot.db"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorabot",
        description="Train LoRAs from Discord.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{run,migrate,backup,copy-database,simulate,demo,invite,check}"
    )

    run = sub.add_parser("run", help="run the bot: webhook server, Discord client, workers")
    run.add_argument("--env-file", default=None, help=ENV_FILE_HELP)
    run.add_argument(
        "--simulate",
        action="store_true",
        help="try it for free: train on the built-in provider simulator (no SDAPI_KEY needed; "
        "every card and DM says the training is simulated)",
    )
    run.add_argument(
        "--step-seconds",
        type=_positive_seconds,
        default=5.0,
        help="with --simulate: seconds between the simulated training's steps (default: 5)",
    )

    migrate = sub.add_parser("migrate", help="apply pending database migrations and exit")
    migrate.add_argument("--database-url", help="overrides DATABASE_URL")
    migrate.add_argument("--env-file", default=None, help=ENV_FILE_HELP)

    backup = sub.add_parser(
        "backup", help="copy the database to PATH, safely while the bot runs (SQLite's online backup)"
    )
    backup.add_argument("path", metavar="PATH", help="the backup file to write (refused if it exists)")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    backup.add_argument("--database-url", help="overrides DATABASE_URL")
    backup.add_argument("--env-file", default=None, help=ENV_FILE_HELP)

    copy = sub.add_parser(
        "copy-database",
        help="copy every row from one database to an empty one (SQLite and PostgreSQL, either way), "
        "then compare the row counts; stop the bot first",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL", help="e.g. sqlite:///lorabot.db")
    copy.add_argument("--to", dest="target", required=True, metavar="URL", help="e.g. postgresql://lorabot@db/lorabot")

    simulate = sub.add_parser("simulate", help="serve a local simulator of the provider's training API")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=7860)
    simulate.add_argument("--step-seconds", type=float, default=5.0, help="seconds between training statuses")
    simulate.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    simulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a fault switch at start (repeatable; VALUE is JSON or a plain word), e.g. "
        "--fault status_not_found=2 --fault fail_submission_kind=queue_full; see docs/provider.md",
    )
    demo = sub.add_parser(
        "demo",
        help="watch the real bot train a LoRA end to end: a built-in Discord stand-in and the provider "
        "simulator on loopback; no token, no key, no network",
    )
    demo.add_argument("--out", default="lorabot-demo.html", help="the HTML transcript (default: lorabot-demo.html)")
    demo.add_argument(
        "--step-seconds", type=float, default=0.3, help="seconds between the simulated training's steps (default: 0.3)"
    )
    invite = sub.add_parser("invite", help="print the URL that adds the bot to a server (needs DISCORD_TOKEN only)")
    invite.add_argument("--env-file", default=None, help=ENV_FILE_HELP)
    check = sub.add_parser(
        "check", help="check the setup without spending anything: settings, database, Discord, provider, webhooks"
    )
    check.add_argument("--env-file", default=None, help=ENV_FILE_HELP)
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600 seconds")
    return value


#: The API key `lorabot run --simulate` uses: its simulator takes only this one, so no real key is needed.
SIMULATOR_KEY = "lorabot-simulator-key"


def _log_where(env_file: Path | None, database_url: str) -> None:
    """Say which settings file and which database this run uses: both depend on the working
    directory. Warn about keys of the file that look like a misspelt setting."""
    log.info(describe_env_file(env_file))
    if database_url.startswith(("postgresql://", "postgres://")):
        from bot.store.pg_database import redact_url

        log.info("database: %s", redact_url(database_url))
    else:
        log.info(describe_database(database_url))
    for warning in misspelt_keys(env_file, Settings.model_fields):
        log.warning(warning)


def _run(env_file: Path | None, *, simulate: bool = False, step_seconds: float = 5.0) -> int:
    # --simulate: SDAPI_KEY is not needed, and SDAPI_BASE_URL is replaced by the address of the
    # simulator, known once it listens (see `_serve`).
    overrides = {"sdapi_key": SIMULATOR_KEY, "sdapi_base_url": "http://127.0.0.1"} if simulate else {}
    try:
        settings = load_settings(env_file=env_file, **overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    from bot.store.pg_database import url_passwords

    setup_logging(
        settings.log_level,
        [
            settings.discord_token.get_secret_value(),
            settings.sdapi_key.get_secret_value(),
            *url_passwords(settings.database_url),
        ],
        settings.log_format,
    )
    _log_where(env_file, settings.database_url)
    from bot.store import MigrationError

    try:
        asyncio.run(_serve(settings, step_seconds if simulate else None))
    except ConfigError as error:
        # Found at start-up or as a fatal stop: an unwritable database, a busy webhook port, a base
        # URL that redirects, a token Discord rejects. One line naming the setting; no traceback.
        print(error, file=sys.stderr)
        return 2
    except MigrationError as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 3
    return 0


async def _serve(settings: Settings, simulator_step_seconds: float | None) -> None:
    """Run the bot until a stop signal; with a step time, against a simulator in this process."""
    from bot.app import Application

    if simulator_step_seconds is None:
        await Application(settings).run()
        return
    from bot.simulator import start_simulator

    async with await start_simulator(step_seconds=simulator_step_seconds, api_key=SIMULATOR_KEY) as simulator:
        await Application(settings.for_simulator(simulator.url)).run()


def _migrate(database_url: str | None, env_file: Path | None = None) -> int:
    from bot.store import MigrationError
    from bot.store.open import UnknownDatabaseUrl, database_kind, open_stores
    from bot.store.pg_database import url_passwords

    config = _DatabaseOnly(_env_file=env_file)
    url = database_url or config.database_url
    setup_logging(config.log_level, url_passwords(url), fmt=config.log_format)
    try:
        database_kind(url)
    except UnknownDatabaseUrl as error:
        print(error, file=sys.stderr)
        return 2
    _log_where(env_file, url)

    async def migrate() -> int:
        stores = await open_stores(url)
        try:
            applied = await stores.database.migrate()
            version = await stores.database.schema_version()
        finally:
            await stores.close()
        print(f"applied {len(applied)} migration(s); schema version {version}")
        return 0

    try:
        return asyncio.run(migrate())
    except ConfigError as error:  # the database cannot be opened for writing: names DATABASE_URL
        print(error, file=sys.stderr)
        return 2
    except MigrationError as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 3


def _backup(path: str, *, force: bool, database_url: str | None, env_file: Path | None) -> int:
    """An online backup of the database to `path` (safe while the bot runs), and what it holds."""
    from bot.store.backup import BackupError, BackupFailed, backup_database
    from bot.store.pg_database import is_postgres_url, redact_url

    config = _DatabaseOnly(_env_file=env_file)
    url = database_url or config.database_url
    setup_logging(config.log_level, fmt=config.log_format)
    if is_postgres_url(url):
        print(
            "DATABASE_URL: lorabot backup copies SQLite databases; back PostgreSQL up with pg_dump "
            "(see docs/operations.md, Backups)",
            file=sys.stderr,
        )
        return 2
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        print(f"DATABASE_URL: must look like sqlite:///path/to/file.db, got {redact_url(url)!r}", file=sys.stderr)
        return 2
    _log_where(env_file, url)
    try:
        result = backup_database(url.removeprefix("sqlite:///"), path, force=force)
    except BackupFailed as error:
        print(error, file=sys.stderr)
        return 1
    except BackupError as error:
        print(error, file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def _copy_database(source: str, target: str) -> int:
    """Copy one database into an empty one and print the row counts of both; 1 if they differ."""
    from bot.store import MigrationError
    from bot.store.copy import CopyRefused, copy_database
    from bot.store.pg_database import url_passwords

    setup_logging("WARNING", [*url_passwords(source), *url_passwords(target)])
    try:
        report = asyncio.run(copy_database(source, target))
    except (ConfigError, CopyRefused) as error:  # unreachable or unknown URL, a non-empty target
        print(error, file=sys.stderr)
        return 2
    except MigrationError as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 3
    print(report.table())
    return 0 if report.ok else 1


def _demo(out: str, step_seconds: float) -> int:
    # Imported here: the Discord stand-in is for the demo (and the tests) only, never `lorabot run`.
    from bot.demo.run import main as demo_main

    return demo_main(out, step_seconds)


def _invite(env_file: str) -> int:
    """Print the invite URL: the application id comes from Discord, read with the bot token."""
    import discord
    from pydantic import ValidationError

    from bot.invite import DiscordSettings, invite_url, read_application_id

    try:
        config = DiscordSettings(_env_file=env_file)
    except ValidationError as error:
        names = ", ".join(".".join(map(str, item["loc"])).upper() for item in error.errors())
        print(f"Invalid configuration: {names} (DISCORD_TOKEN is required)", file=sys.stderr)
        return 2
    token = config.discord_token.get_secret_value()
    setup_logging("ERROR", [token])
    try:
        application_id = asyncio.run(read_application_id(config.discord_api_base, token))
    except discord.LoginFailure:
        print("Discord refused DISCORD_TOKEN: reset the bot's token in the Developer Portal", file=sys.stderr)
        return 2  # a configuration error, like `lorabot run` with a rejected token
    except (discord.DiscordException, OSError, TimeoutError) as error:
        print(f"cannot reach Discord at {config.discord_api_base}: {type(error).__name__}", file=sys.stderr)
        return 1
    print(invite_url(application_id))
    return 0


def _check(env_file: str) -> int:
    """Print one line per check; exit 1 if any failed."""
    from bot.setup_check import CheckResult, check_config, run_checks

    try:
        "✓✗→".encode(sys.stdout.encoding or "ascii")
        ascii_only = False
    except (UnicodeEncodeError, LookupError):
        ascii_only = True

    def report(result: CheckResult) -> None:
        print(result.line(ascii_only=ascii_only), flush=True)

    config, settings = check_config(env_file)
    report(config)
    if settings is None:
        return 1
    setup_logging("ERROR", [settings.discord_token.get_secret_value(), settings.sdapi_key.get_secret_value()])
    results = asyncio.run(run_checks(settings, report))
    return 0 if all(result.ok for result in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:  # paths are relative to the working directory: an explicit --env-file must exist
        env_file = resolve_env_file(getattr(args, "env_file", None))
    except EnvFileMissing as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "run":
        return _run(env_file, simulate=args.simulate, step_seconds=args.step_seconds)
    if args.command == "migrate":
        return _migrate(args.database_url, env_file)
    if args.command == "backup":
        return _backup(args.path, force=args.force, database_url=args.database_url, env_file=env_file)
    if args.command == "copy-database":
        return _copy_database(args.source, args.target)
    if args.command == "invite":
        return _invite(str(env_file or DEFAULT_ENV_FILE))
    if args.command == "check":
        return _check(str(env_file or DEFAULT_ENV_FILE))
    if args.command == "demo":
        return _demo(args.out, args.step_seconds)
    setup_logging("INFO", [args.api_key] if args.api_key else [])
    from bot.simulator import FaultError, parse_fault_assignments, serve

    try:
        faults = parse_fault_assignments(args.fault)
    except FaultError as error:
        print(f"--fault: {error}", file=sys.stderr)
        return 2
    serve(args.host, args.port, args.step_seconds, args.api_key, faults=faults)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
