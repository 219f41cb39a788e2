"""The `lorabot` command as an operator uses it: real subprocesses, real files, loopback only."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.store import load_migrations

LORABOT = [sys.executable, "-m", "bot"]
SECRETS = {
    "DISCORD_TOKEN": "tok-ABCDEFGHIJKLMNOPQRSTUVWXYZ-123456",
    "SDAPI_KEY": "key-abcdefghijklmnopqrstuvwxyz-98765",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SDAPI_", "PUBLIC_", "WEBHOOK_"))}
    env.update(extra)
    return env


def test_help_lists_subcommands() -> None:
    out = subprocess.run([*LORABOT, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "migrate", "backup", "simulate"):
        assert command in out
    # The exit statuses are documented where an operator (or a unit file) looks first.
    assert "exit status" in out
    for code in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {code}" in out, code


def test_run_with_broken_config_names_every_bad_setting(tmp_path: Path) -> None:
    env = clean_env(tmp_path, WEBHOOK_PORT="not-a-port", SDAPI_BASE_URL="ftp://nope", MIN_IMAGES="9", MAX_IMAGES="6")
    result = subprocess.run(
        [*LORABOT, "run"],  # no .env in tmp_path: the environment only
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode != 0
    for name in ("DISCORD_TOKEN", "SDAPI_KEY", "WEBHOOK_PORT", "SDAPI_BASE_URL"):
        assert name in result.stderr, name
    assert "PUBLIC_URL" not in result.stderr  # optional: without it the bot polls


def test_run_simulate_needs_no_provider_settings_and_checks_its_step_time(tmp_path: Path) -> None:
    env = clean_env(tmp_path, SDAPI_BASE_URL="ftp://nope")  # replaced by the simulator's address anyway
    result = subprocess.run(
        [*LORABOT, "run", "--simulate"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr
    assert "SDAPI" not in result.stderr and "PUBLIC_URL" not in result.stderr

    refused = subprocess.run(
        [*LORABOT, "run", "--simulate", "--step-seconds", "0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2 and "--step-seconds" in refused.stderr


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    env = clean_env(tmp_path, DATABASE_URL=f"sqlite:///{db}")
    first = subprocess.run([*LORABOT, "migrate"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    second = subprocess.run([*LORABOT, "migrate"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert f"applied {len(load_migrations())} migration" in first.stdout
    assert "applied 0 migration" in second.stdout
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "job_events", "outbox", "users", "kv", "schema_migrations"} <= tables


def test_run_migrates_serves_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "bot.db"
    dead = free_port()  # nothing listens here: Discord is "unreachable"
    env = clean_env(
        tmp_path,
        **SECRETS,
        PUBLIC_URL="https://bot.example.org",
        WEBHOOK_PORT=str(port),
        DATABASE_URL=f"sqlite:///{db}",
        DISCORD_API_BASE=f"http://127.0.0.1:{dead}/api/v10",
        DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{dead}/",
        SDAPI_BASE_URL=f"http://127.0.0.1:{dead}",
    )
    proc = subprocess.Popen(
        [*LORABOT, "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            body = response.json()
            break
        assert body is not None, "the webhook server never answered /healthz"
        assert body["database"] is True
        assert body["discord"] in ("connecting", "closed")
        # Discord never answers: the process is up, but not ready to serve members.
        assert (response.status_code, body["status"], body["waiting_for"]) == (503, "starting", ["discord"])
        assert body["mode"] == "webhooks"  # PUBLIC_URL is set
        newest = len(load_migrations())
        assert sqlite3.connect(db).execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == newest
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    assert "mode: webhooks to https://bot.example.org/webhooks/training" in output
    # Where the settings and the database are, whatever the working directory.
    assert f"settings: no .env file in {tmp_path}" in output
    assert f"database: {db}" in output
    assert "voice will NOT be supported" not in output
    for secret in SECRETS.values():
        assert secret not in output


@pytest.mark.parametrize("flag", ["--host", "--port", "--step-seconds"])
def test_simulate_accepts_its_options(flag: str) -> None:
    out = subprocess.run([*LORABOT, "simulate", "--help"], capture_output=True, text=True, check=True).stdout
    assert flag in out
