"""`lorabot backup`: an online copy of the database, taken while webhooks keep arriving, passes
`PRAGMA integrity_check` and holds every job committed before it started; it never overwrites a
file unless told to."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.jobs.service import JobService
from bot.store.backup import BackupError, backup_database
from bot.store.sqlite import SqliteStore
from bot.webhooks import WebhookServer
from tests.test_webhooks import body, make_job, no_provider_calls

WORDS = ("training_started", "training_success", "trained_model_uploaded", "model_ready")


def clean_env() -> dict[str, str]:
    names = {name.upper() for name in Settings.model_fields}
    return {k: v for k, v in os.environ.items() if k.upper() not in names}


def jobs_in(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return dict(conn.execute("SELECT id, state FROM jobs").fetchall())
    finally:
        conn.close()


def leftovers(target: Path) -> list[Path]:
    """Files the backup should not leave: its partial copy, a -wal beside the finished one."""
    return [*target.parent.glob(".*.partial"), *target.parent.glob(f"{target.name}-*")]


async def lorabot_backup(database: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "backup", str(target), "--database-url", f"sqlite:///{database}", *extra,
        env=clean_env(), cwd=target.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode())


async def test_a_backup_while_webhooks_arrive_is_whole_and_holds_every_committed_job(
    tmp_path: Path, store: SqliteStore, settings, make_provider
) -> None:
    database = Path(store.db.path)
    service = JobService(store, make_provider(no_provider_calls), settings)
    server = WebhookServer(service, store, database=store.db, max_body_bytes=4096, rate_per_minute=600)
    await server.start("127.0.0.1", 0)
    committed: dict[int, str] = {}  # job id -> the state its last answered webhook moved it to
    stop = asyncio.Event()

    async def traffic(client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            secret = f"secret-{worker}-{n}-0123456789abcdef"
            job = await make_job(store, secret=secret, training_id=f"T{worker}x{n}", owner=worker)
            committed[job.id] = job.state.value
            for word in WORDS:
                url = f"/webhooks/training/{job.id}/{secret}"
                response = await client.post(url, json=body(word, model_id=f"T{worker}x{n}"))
                assert response.status_code == 200, response.text
                committed[job.id] = response.json()["state"]

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            writers = [asyncio.create_task(traffic(client, worker)) for worker in range(1, 4)]
            await asyncio.sleep(0.3)
            for round_ in range(3):
                before = dict(committed)  # committed before the backup started
                target = tmp_path / f"backup-{round_}.db"
                result = await lorabot_backup(database, target)
                assert result.returncode == 0, result.stderr
                copy = jobs_in(target)
                assert set(before) <= set(copy), "a job committed before the backup is missing"
                assert f"to {target}:" in result.stdout and f"{len(copy)} jobs" in result.stdout
                assert leftovers(target) == []
            stop.set()
            await asyncio.gather(*writers)
    finally:
        stop.set()
        await server.stop()

    final = tmp_path / "final.db"
    result = await lorabot_backup(database, final)
    assert result.returncode == 0, result.stderr
    assert jobs_in(final) == committed  # every job, each in the state its last answer reported
    assert len(committed) > 20 and set(committed.values()) == {"model_ready"}


async def test_backup_refuses_to_overwrite_unless_forced(tmp_path: Path, store: SqliteStore) -> None:
    await make_job(store)
    database = Path(store.db.path)
    target = tmp_path / "copy.db"
    target.write_bytes(b"precious")
    refused = await lorabot_backup(database, target)
    assert refused.returncode == 2
    (last, *_) = reversed(refused.stderr.splitlines())
    assert last == f"{target} already exists; give another path, or add --force to replace it"
    assert target.read_bytes() == b"precious"

    forced = await lorabot_backup(database, target, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "1 jobs (1 in progress; 1 deploying_gpu)" in forced.stdout
    assert jobs_in(target) == {1: "deploying_gpu"}


def test_backup_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="DATABASE_URL: there is no database"):
        backup_database(tmp_path / "missing.db", tmp_path / "copy.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(BackupError, match="not a lorabot database"):
        backup_database(other, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()
    with pytest.raises(BackupError, match="is the database itself"):
        backup_database(other, other, force=True)
    with pytest.raises(BackupError, match="is a directory"):
        backup_database(other, tmp_path)


def test_backup_of_a_postgresql_url_points_at_pg_dump_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)
    status = main(["backup", str(tmp_path / "copy.db"), "--database-url", "postgresql://bot:s3cret-pw@db/lorabot"])
    err = capsys.readouterr().err
    assert status == 2 and "pg_dump" in err
    assert "s3cret-pw" not in err
    assert not (tmp_path / "copy.db").exists()
