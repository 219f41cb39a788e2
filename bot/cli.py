"""The `lorabot` command: run the bot, apply migrations, or serve the provider simulator."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config import ConfigError, load_settings
from bot.logging_setup import setup_logging


class _DatabaseOnly(BaseSettings):
    """`lorabot migrate` needs only DATABASE_URL, not the Discord token or the API key."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
    database_url: str = "sqlite:///lorabot.db"
    log_level: str = "INFO"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorabot", description="Train LoRAs from Discord.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,migrate,simulate,demo}")

    run = sub.add_parser("run", help="run the bot: webhook server, Discord client, workers")
    run.add_argument("--env-file", default=".env", help="optional .env file (default: .env)")

    migrate = sub.add_parser("migrate", help="apply pending database migrations and exit")
    migrate.add_argument("--database-url", help="overrides DATABASE_URL")

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
    return parser


def _run(env_file: str) -> int:
    try:
        settings = load_settings(env_file=env_file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    setup_logging(
        settings.log_level, [settings.discord_token.get_secret_value(), settings.sdapi_key.get_secret_value()]
    )
    from bot.app import Application

    try:
        asyncio.run(Application(settings).run())
    except ConfigError as error:  # found at start-up, e.g. a base URL that redirects
        print(error, file=sys.stderr)
        return 2
    return 0


def _migrate(database_url: str | None) -> int:
    from bot.store import Database, MigrationError

    config = _DatabaseOnly()
    url = database_url or config.database_url
    setup_logging(config.log_level)
    if not url.startswith("sqlite:///"):
        print(f"DATABASE_URL: must look like sqlite:///path/to/file.db, got {url!r}", file=sys.stderr)
        return 2

    async def migrate() -> int:
        db = await Database.open(url.removeprefix("sqlite:///"))
        try:
            applied = await db.migrate()
            version = await db.schema_version()
        finally:
            await db.close()
        print(f"applied {len(applied)} migration(s); schema version {version}")
        return 0

    try:
        return asyncio.run(migrate())
    except MigrationError as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 1


def _demo(out: str, step_seconds: float) -> int:
    # Imported here: the Discord stand-in is for the demo (and the tests) only, never `lorabot run`.
    from bot.demo.run import main as demo_main

    return demo_main(out, step_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args.env_file)
    if args.command == "migrate":
        return _migrate(args.database_url)
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
