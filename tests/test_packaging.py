"""A non-editable install works on its own: `pip install .` carries the migrations, so `lorabot
migrate` and `lorabot run` create the schema from any working directory, without the source tree.

The project is copied to a temporary directory (so the build leaves nothing in the checkout),
installed with `pip install --target` (no dependencies, no build isolation: offline), and run
with `python -S` and PYTHONPATH=<the install>:<this environment's site-packages>. `-S` skips the
.pth files, among them the editable install's finder that would find `bot` and `migrations` in
the checkout and hide a broken package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bot", "cogs", "migrations")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed (not editable) into a directory of its own; returns that directory."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, source / name)
    target = base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-compile", "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, cwd=base, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return target


def isolated_env(installed: Path, **settings: str) -> dict[str, str]:
    """Only the install and the dependencies are importable; no lorabot setting from the host."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and k != "PYTHONPATH"}
    libraries = dict.fromkeys([str(installed), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env["PYTHONPATH"] = os.pathsep.join(libraries)
    env.update(settings)
    return env


def test_the_install_carries_the_migrations_and_runs_from_there(installed: Path) -> None:
    shipped = sorted(p.name for p in (installed / "migrations").glob("*.sql"))
    assert shipped == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    shipped_postgres = sorted(p.name for p in (installed / "migrations" / "postgres").glob("*.sql"))
    assert shipped_postgres == sorted(p.name for p in (ROOT / "migrations" / "postgres").glob("*.sql"))
    assert shipped_postgres  # PostgreSQL's numbered migrations ship too
    where = subprocess.run(
        [sys.executable, "-S", "-c", "import bot, migrations; print(bot.__file__); print(migrations.__file__)"],
        env=isolated_env(installed), cwd=installed.parent, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(Path(line).is_relative_to(installed) for line in where.stdout.split()), where.stdout


def test_migrate_from_an_install_applies_every_migration(installed: Path) -> None:
    workdir = installed.parent / "migrate"
    workdir.mkdir()
    env = isolated_env(installed, DATABASE_URL="sqlite:///data/bot.db")
    result = subprocess.run(
        [sys.executable, "-S", "-m", "bot", "migrate"], env=env, cwd=workdir, capture_output=True, text=True, timeout=60
    )
    newest = len(list((ROOT / "migrations").glob("*.sql")))
    assert result.returncode == 0, result.stderr
    assert f"applied {newest} migration(s); schema version {newest}" in result.stdout
    conn = sqlite3.connect(workdir / "data" / "bot.db")
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"jobs", "job_events", "outbox", "generations", "schema_migrations"} <= tables


def test_run_from_an_install_migrates_serves_healthz_and_stops_cleanly(installed: Path) -> None:
    workdir = installed.parent / "run"
    workdir.mkdir()
    port, dead = free_port(), free_port()
    env = isolated_env(
        installed,
        DISCORD_TOKEN="tok-ABCDEFGHIJKLMNOPQRSTUVWXYZ-123456",
        SDAPI_KEY="key-abcdefghijklmnopqrstuvwxyz-98765",
        PUBLIC_URL="https://bot.example.org",
        WEBHOOK_PORT=str(port),
        DATABASE_URL="sqlite:///bot.db",
        DISCORD_API_BASE=f"http://127.0.0.1:{dead}/api/v10",
        DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{dead}/",
        SDAPI_BASE_URL=f"http://127.0.0.1:{dead}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-S", "-m", "bot", "run"],
        env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            except httpx.TransportError:
                time.sleep(0.1)
        assert body is not None, "no /healthz from the installed bot"
        assert body["database"] is True and body["status"] == "starting"  # Discord is unreachable
        time.sleep(1.0)  # running for a while: nothing else breaks
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    version = sqlite3.connect(workdir / "bot.db").execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
    assert version == len(list((ROOT / "migrations").glob("*.sql")))
