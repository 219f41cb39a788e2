"""Failing like a well-behaved service: each fatal stop is one line naming the setting and its
fix, with a documented non-zero exit status, never a traceback; and the start says which
settings file and which database it uses, since both depend on the working directory."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.config import Settings

LORABOT = [sys.executable, "-m", "bot"]
SECRETS = {
    "DISCORD_TOKEN": "tok-ABCDEFGHIJKLMNOPQRSTUVWXYZ-123456",
    "SDAPI_KEY": "key-abcdefghijklmnopqrstuvwxyz-98765",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any lorabot setting, plus `extra`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(extra)
    return env


def run_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Valid settings for `lorabot run`; Discord and the provider are addresses where nothing listens."""
    dead = free_port()
    settings = {
        **SECRETS,
        "PUBLIC_URL": "https://bot.example.org",
        "WEBHOOK_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "DISCORD_API_BASE": f"http://127.0.0.1:{dead}/api/v10",
        "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{dead}/",
        "SDAPI_BASE_URL": f"http://127.0.0.1:{dead}",
    }
    return clean_env(**{**settings, **extra})


def lorabot(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LORABOT, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def one_line_naming(result: subprocess.CompletedProcess[str], setting: str) -> str:
    """The fatal message: exactly one line of stderr names `setting`, and there is no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "Event loop is closed" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{setting}:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- fatal stops ---------------------------------------------------------------------------------


def test_a_busy_webhook_port_is_one_line_naming_webhook_port_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = lorabot("run", env=run_env(tmp_path, WEBHOOK_PORT=str(port)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_naming(result, "WEBHOOK_PORT")
    assert f"127.0.0.1:{port} is already in use" in line and "free port" in line
    for secret in SECRETS.values():
        assert secret not in result.stdout + result.stderr


def test_an_unwritable_database_is_one_line_naming_database_url_and_the_path_exit_2(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a file where a directory should be\n")
    database = tmp_path / "afile" / "bot.db"
    url = f"sqlite:///{database}"

    ran = lorabot("run", env=run_env(tmp_path, DATABASE_URL=url), cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert str(database) in one_line_naming(ran, "DATABASE_URL")

    migrated = lorabot("migrate", env=clean_env(DATABASE_URL=url), cwd=tmp_path)
    assert migrated.returncode == 2, migrated.stderr
    assert str(database) in one_line_naming(migrated, "DATABASE_URL")

    # A directory where the file should be: SQLite's own "unable to open", same one line.
    directory = lorabot("migrate", "--database-url", f"sqlite:///{tmp_path}", env=clean_env(), cwd=tmp_path)
    assert directory.returncode == 2, directory.stderr
    assert str(tmp_path) in one_line_naming(directory, "DATABASE_URL")


def test_a_database_newer_than_the_code_exits_3_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    env = clean_env(DATABASE_URL=f"sqlite:///{database}")
    assert lorabot("migrate", env=env, cwd=tmp_path).returncode == 0
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', '2030-01-01T00:00:00+00:00')")
    conn.close()
    for args, environment in ((("migrate",), env), (("run",), run_env(tmp_path))):
        result = lorabot(*args, env=environment, cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "newer than this code" in line]
        assert "DATABASE_URL" in line


def test_a_missing_explicit_env_file_is_refused_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "lorabot.env"
    for command in ("run", "migrate", "backup", "check"):
        args = [command, "--env-file", str(missing)] + ([str(tmp_path / "copy.db")] if command == "backup" else [])
        result = lorabot(*args, env=run_env(tmp_path), cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if "--env-file" in line]
        assert len(result.stderr.splitlines()) == 1 and str(missing) in result.stderr, result.stderr
    assert not (tmp_path / "bot.db").exists()  # refused before anything was opened


# -- where the settings and the database are ----------------------------------------------------


def test_the_start_names_the_settings_file_and_the_absolute_database_path(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///data/bot.db\n")
    result = lorabot("migrate", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"settings: {tmp_path / '.env'}" in result.stderr
    assert f"database: {tmp_path / 'data' / 'bot.db'}" in result.stderr  # relative in .env, absolute here
    assert (tmp_path / "data" / "bot.db").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = lorabot("migrate", env=clean_env(), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert f"settings: no .env file in {elsewhere}" in result.stderr
    assert f"database: {elsewhere / 'lorabot.db'}" in result.stderr


def test_keys_of_the_env_file_that_look_like_a_misspelt_setting_are_warned_about(tmp_path: Path) -> None:
    env_file = tmp_path / "lorabot.env"
    env_file.write_text(
        "DATABASE_URL=sqlite:///bot.db\n"
        "WEBHOOK_PROT=9000\n"  # a typo: WEBHOOK_PORT
        "DISCROD_TOKEN=x\n"  # a typo: DISCORD_TOKEN
        "SDAPI_URL=https://example.org\n"  # our prefix: SDAPI_BASE_URL probably
        "EDITOR=vim\n"  # somebody else's: no warning
    )
    result = lorabot("migrate", "--env-file", str(env_file), env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "is not a lorabot setting" in line]
    assert len(warnings) == 3, result.stderr
    assert "WEBHOOK_PROT" in warnings[0] and "did you mean WEBHOOK_PORT?" in warnings[0]
    assert "DISCROD_TOKEN" in warnings[1] and "did you mean DISCORD_TOKEN?" in warnings[1]
    assert "SDAPI_URL" in warnings[2] and "did you mean SDAPI_BASE_URL?" in warnings[2]
    assert all("WARNING" in line and str(env_file) in line for line in warnings)
    assert "EDITOR" not in result.stderr
