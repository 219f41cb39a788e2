"""Benchmark 1: webhook ingest through the real webhook server, against a bare aiohttp handler.

Three processes: the real `WebhookServer` (bench._webhook_server, mode real), a bare aiohttp
server answering 200 (same module, mode bare), and the load generator (bench._loadgen). Each
round runs both servers closed-loop (throughput) and open-loop at a fixed 200 requests/s
(latency), alternating which server goes first. Afterwards the job_events rows written by
webhooks are counted against the 200 answers: nothing may be lost.

Late authentic webhooks: 500 more jobs are driven to model_ready, through all 8 statuses, by a
separate real server process before the measured one starts. Each round then also runs the
measured real server closed-loop on those 500 jobs' webhooks over and over (every one an
authentic duplicate for a finished job: the server reads each job once, then answers from
memory), paired with the same round's bare figure. Those jobs' rows must not change.

Jobs: one template job goes through the real flow (JobService.create_preview, begin_submission,
SqliteStore.prepare_submission with hash_secret, then the provider's answer recorded with its training
id but an unrecognised status word, so the job is `submitting`, holds its training id, and all 8
documented statuses are still to come); its rows (job, event rows, outbox) are then copied in
bulk with their own ids, training ids and secret hashes. Every webhook sent is a new
(job, status), so every 200 must leave exactly one new job_events row.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import pstats
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    ROOT,
    Row,
    Section,
    check,
    child_env,
    cpu_seconds,
    fmt_ratio,
    median,
    ms,
    ratio,
    relative_paths,
    run_json,
    spread,
    thread_cpu_seconds,
)
from bench._loadgen import secret_for, training_id_for

OPEN_RATE = 200.0
LATE_JOBS = 500  # one block (see bench._loadgen.target)


async def template(database_url: str) -> int:
    """The template job, made through the real flow in the database `database_url` names (migrated first)."""
    from datetime import timedelta

    from bot.config import load_settings
    from bot.jobs.model import PreviewPhoto
    from bot.jobs.service import JobService, TrainingParams, hash_secret
    from bot.jobs.states import Action, Event, EventSource
    from bot.provider.client import ProviderClient
    from bot.store.open import open_stores

    settings = load_settings(
        env_file=None, discord_token="bench-token-000000", sdapi_key="bench-key-00000000", public_url="https://x.test"
    )
    stores = await open_stores(database_url, migrate=True)
    store = stores.jobs
    provider = ProviderClient(settings.sdapi_base_url, "bench-key-00000000")
    service = JobService(store, provider, settings)
    try:
        job = await service.create_preview(
            owner_id=53908232506183680,
            guild_id=290926798626357999,
            channel_id=645027906669510667,
            name="sks man",
            params=TrainingParams("photo of sks man", "photo of a man"),
            photos=[PreviewPhoto(f"photo{i}.jpg", b"jpeg") for i in range(10)],
            card_in_dms=False,
            expires_at=store.now() + timedelta(minutes=10),
        )
        await service.begin_submission(job.id)
        urls = [
            f"https://cdn.discordapp.com/attachments/645027906669510667/{1_300_000_000_000_000_000 + i}/"
            f"crop{i}.jpg?ex=6745a1b2&is=67445032&hm=" + "0f" * 32
            for i in range(10)
        ]
        await store.prepare_submission(job.id, image_urls=urls, secret_hash=hash_secret(secret_for(job.id)))
        answer = {"status": "success", "messege": "queued", "training_id": training_id_for(job.id)}
        await service.record(
            job.id,
            Event(Action.ACCEPTED, EventSource.SYSTEM, status="queued", training_id=training_id_for(job.id)),
            payload=json.dumps(answer),
        )
        await store.set_card(job.id, 645027906669510667, 1_300_000_000_000_001_000)
    finally:
        await provider.aclose()
        await stores.close()
    return job.id


def clone(db_path: Path, template: int, count: int) -> tuple[int, int]:
    """Copy the template job `count` times; returns the first new id and the count."""
    from bot.jobs.service import hash_secret

    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        columns = [
            r[1]
            for r in conn.execute("PRAGMA table_info(jobs)")
            if r[1] not in ("id", "training_id", "webhook_secret_hash")
        ]
        col_sql = ", ".join(columns)
        first = int(conn.execute("SELECT MAX(id) FROM jobs").fetchone()[0]) + 1
        ids = range(first, first + count)
        keys = [r[0] for r in conn.execute("SELECT dedupe_key FROM outbox WHERE job_id = ?", (template,))]
        if any(k != f"card:{template}" for k in keys):
            raise RuntimeError(f"unexpected outbox rows for the template job: {keys}")
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO jobs (id, training_id, webhook_secret_hash, {col_sql})"
            f" SELECT ?, ?, ?, {col_sql} FROM jobs WHERE id = {template}",
            ((i, training_id_for(i), hash_secret(secret_for(i))) for i in ids),
        )
        conn.executemany(
            "INSERT INTO job_events (job_id, status, source, payload, received_at, applied)"
            f" SELECT ?, status, source, payload, received_at, applied FROM job_events WHERE job_id = {template}",
            ((i,) for i in ids),
        )
        conn.executemany(
            "INSERT INTO outbox (job_id, kind, dedupe_key, payload, created_at, next_attempt_at)"
            " SELECT ?, kind, 'card:' || ?, payload, created_at, next_attempt_at FROM outbox"
            f" WHERE job_id = {template}",
            ((i, i) for i in ids),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return first, count


class Server:
    """A webhook server subprocess (real or bare)."""

    def __init__(
        self, mode: str, db: Path | None, log: Path, profile: Path | None = None, *, database_url: str | None = None
    ) -> None:
        options: dict[str, Any] = {"mode": mode, "db": str(db) if db else None, "database_url": database_url}
        if profile is not None:
            options["profile"] = str(profile)
        self.mode = mode
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "bench._webhook_server", json.dumps(options)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env=child_env(),
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"{mode} webhook server did not start:\n{log.read_text()[-3000:]}")
        self.port = int(json.loads(line)["port"])

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) or math.nan

    def stop(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def _late_snapshot(db: Path, span: tuple[int, int]) -> dict[str, Any]:
    """What the finished jobs of `span` hold: row counts and a digest of their job rows."""
    import hashlib

    conn = sqlite3.connect(db)
    try:
        events = conn.execute("SELECT COUNT(*) FROM job_events WHERE job_id >= ? AND job_id < ?", span).fetchone()[0]
        outbox = conn.execute("SELECT COUNT(*) FROM outbox WHERE job_id >= ? AND job_id < ?", span).fetchone()[0]
        states = dict(
            conn.execute("SELECT state, COUNT(*) FROM jobs WHERE id >= ? AND id < ? GROUP BY state", span).fetchall()
        )
        rows = conn.execute("SELECT * FROM jobs WHERE id >= ? AND id < ? ORDER BY id", span).fetchall()
    finally:
        conn.close()
    return {
        "events": events,
        "outbox": outbox,
        "states": states,
        "jobs_digest": hashlib.sha256(repr(rows).encode()).hexdigest(),
    }


def _load(server: Server, **options: Any) -> dict[str, Any]:
    cpu_before, threads_before = server.cpu(), thread_cpu_seconds(server.proc.pid)
    result = run_json("bench._loadgen", {"port": server.port, **options}, timeout=300)
    result["server_cpu"] = server.cpu() - cpu_before
    threads_after = thread_cpu_seconds(server.proc.pid)
    result["server_threads"] = {k: v - threads_before.get(k, 0.0) for k, v in threads_after.items()}
    result["server_pid"] = server.proc.pid
    return result


def run(quick: bool) -> Section:
    from bot.jobs.states import PROVIDER_PROGRESS

    section = Section("webhooks")
    statuses = [s.value for s in PROVIDER_PROGRESS]
    rounds = 1 if quick else 3
    closed_s = 3.0 if quick else 8.0
    open_s = 6.0 if quick else 15.0
    concurrency = 32
    closed_jobs = 6000  # whole blocks of 500 jobs (see bench._loadgen.target); 48,000 webhooks at most
    open_jobs = 500 * math.ceil(OPEN_RATE * (open_s + 1.0) / len(statuses) / 500)

    with tempfile.TemporaryDirectory(prefix="lorabot-bench-webhooks-") as tmp:
        tmp_path = Path(tmp)
        db = tmp_path / "bot.db"
        template_job = asyncio.run(template(f"sqlite:///{db}"))
        needed = 1000 + rounds * (2 * closed_jobs + open_jobs) + closed_jobs + LATE_JOBS
        next_job, _ = clone(db, template_job, needed)

        # The jobs of the late webhooks: finished through the real flow by a server process of
        # their own, so the measured server has never seen them (it reads each one once).
        late_first, next_job = next_job, next_job + LATE_JOBS
        late_span = (late_first, late_first + LATE_JOBS)
        late_jobs = {"first_job": late_first, "jobs": LATE_JOBS, "statuses": statuses}
        primer = Server("real", db, tmp_path / "primer.log")
        try:
            primed = _load(primer, mode="closed", concurrency=concurrency, duration=300.0, warmup=0.0, **late_jobs)
        finally:
            primer_exit = primer.stop()
        late_before = _late_snapshot(db, late_span)
        if primed["statuses"] != {"200": LATE_JOBS * len(statuses)} or late_before["states"] != {
            "model_ready": LATE_JOBS
        }:
            raise RuntimeError(f"finishing the late jobs failed: {primed['statuses']}, {late_before['states']}")

        real_ranges: list[tuple[int, int]] = []  # job ids the real server's webhooks went to

        def take(count: int, *, real_server: bool = True) -> dict[str, Any]:
            nonlocal next_job
            first, next_job = next_job, next_job + count
            if real_server:
                real_ranges.append((first, first + count))
            return {"first_job": first, "jobs": count, "statuses": statuses}

        real = Server("real", db, tmp_path / "real.log")
        bare = Server("bare", None, tmp_path / "bare.log")
        results: dict[str, dict[str, list[dict[str, Any]]]] = {
            "real": {"closed": [], "open": []},
            "bare": {"closed": [], "open": []},
            "late": {"closed": []},
        }
        real_ok = real_other = 0
        floors: list[dict[str, Any]] = []
        late_floors: list[dict[str, Any]] = []
        try:
            # Warm both (imports done, first connections, SQLite caches).
            warm = _load(real, mode="closed", concurrency=8, duration=0.5, warmup=0.0, **take(500))
            _load(
                bare, mode="closed", concurrency=8, duration=0.5, warmup=0.0, first_job=1, jobs=500, statuses=statuses
            )
            real_ok += warm["statuses"].get("200", 0)
            real_other += sum(v for k, v in warm["statuses"].items() if k != "200")
            for r in range(rounds):
                order = (bare, real) if r % 2 == 0 else (real, bare)
                closed_order = ("bare", "real", "late") if r % 2 == 0 else ("late", "real", "bare")
                for kind in closed_order:
                    server = bare if kind == "bare" else real
                    if kind == "late":
                        jobs = {**late_jobs, "repeat": True}
                    elif kind == "real":
                        jobs = take(closed_jobs)
                    else:
                        jobs = {"first_job": 1, "jobs": closed_jobs, "statuses": statuses}
                    res = _load(server, mode="closed", concurrency=concurrency, duration=closed_s, warmup=0.5, **jobs)
                    results[kind]["closed"].append(res)
                for server in order:
                    jobs = (
                        take(open_jobs) if server is real else {"first_job": 1, "jobs": open_jobs, "statuses": statuses}
                    )
                    res = _load(
                        server,
                        mode="open",
                        concurrency=concurrency,
                        rate=OPEN_RATE,
                        duration=open_s,
                        warmup=1.0,
                        **jobs,
                    )
                    results[server.mode]["open"].append(res)
                floors.append(
                    run_json(
                        "bench._webhook_server",
                        {
                            "mode": "floor",
                            "db": str(db),
                            "concurrency": concurrency,
                            "duration": closed_s,
                            **take(closed_jobs, real_server=False),
                        },
                        timeout=300,
                    )
                )
                late_floors.append(
                    run_json(
                        "bench._webhook_server",
                        {
                            "mode": "floor",
                            "db": str(db),
                            "concurrency": concurrency,
                            "duration": closed_s,
                            "repeat": True,
                            **late_jobs,
                        },
                        timeout=300,
                    )
                )
            for kind in ("closed", "open"):
                for res in results["real"][kind]:
                    real_ok += res["statuses"].get("200", 0)
                    real_other += sum(v for k, v in res["statuses"].items() if k != "200")
        finally:
            bare.stop()
            exit_code = real.stop()

        conn = sqlite3.connect(db)
        try:
            rows = sum(
                conn.execute(
                    "SELECT COUNT(*) FROM job_events WHERE source = 'webhook' AND job_id >= ? AND job_id < ?", span
                ).fetchone()[0]
                for span in real_ranges
            )
            ready = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'model_ready' AND NOT (id >= ? AND id < ?)", late_span
            ).fetchone()[0]
            dms = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'dm' AND NOT (job_id >= ? AND job_id < ?)", late_span
            ).fetchone()[0]
        finally:
            conn.close()
        late_after = _late_snapshot(db, late_span)
        log_tail = relative_paths((tmp_path / "real.log").read_text(errors="replace"))
        # Warnings about webhooks, jobs or the store (not the expected "cannot reach Discord" ones).
        log_lines = log_tail.splitlines()
        warning_lines = []
        for number, line in enumerate(log_lines):
            if " bot.app:" in line or " discord." in line:
                continue
            if " WARNING " in line or " ERROR " in line:
                warning_lines.append(line)
            elif line.startswith("Traceback"):  # keep the whole traceback, up to its last line
                end = next((i for i in range(number + 1, len(log_lines)) if not log_lines[i].startswith(" ")), number)
                warning_lines.append("\n".join(log_lines[number : end + 1]))
        warnings = len(warning_lines)

        profile_text = late_profile_text = ""
        if not quick:
            profile_text = _profile(tmp_path, db, take(closed_jobs, real_server=False), concurrency)
            late_profile_text = _profile(tmp_path, db, {**late_jobs, "repeat": True}, concurrency, "late")

    def agg(mode: str, kind: str, key: str, sub: str | None = None) -> list[float]:
        out = []
        for res in results[mode][kind]:
            value = res[key] if sub is None else res.get(key, {}).get(sub, math.nan)
            out.append(float(value))
        return out

    name = "1 webhooks"
    # Throughput: per round, real / bare (paired, same round), then the median over rounds.
    real_tp, bare_tp = agg("real", "closed", "throughput"), agg("bare", "closed", "throughput")
    paired = [ratio(a, b) for a, b in zip(real_tp, bare_tp, strict=True)]
    tp_ratio = median(paired)
    section.rows.append(
        Row(
            name,
            f"throughput, closed loop, {concurrency} connections (req/s)",
            f"{median(real_tp):.0f}",
            f"bare handler {median(bare_tp):.0f}",
            fmt_ratio(tp_ratio),
            ">= 0.50x bare",
            check(tp_ratio, 0.5, below=False),
            f"median of {rounds} paired round(s); per-round ratios {spread(paired)}",
        )
    )
    floor_tp = [f["throughput"] for f in floors]
    floor_ratio = median([ratio(f, b) for f, b in zip(floor_tp, bare_tp, strict=True)])
    section.rows.append(
        Row(
            name,
            "ceiling: the same handler without HTTP (req/s)",
            f"{median(floor_tp):.0f}",
            f"bare handler {median(bare_tp):.0f}",
            fmt_ratio(floor_ratio),
            "",
            None,
            "the real handler (WebhookServer.training_webhook) called with in-memory requests, same bodies, "
            f"{concurrency} tasks, no socket or HTTP parsing: what the server could reach if aiohttp cost "
            f"nothing; per-round {spread(floor_tp, '{:.0f}')}; answers {floors[-1].get('answers') if floors else ''}",
        )
    )
    real_cpu = [res["server_cpu"] / max(1, res["sent"]) for res in results["real"]["closed"]]
    bare_cpu = [res["server_cpu"] / max(1, res["sent"]) for res in results["bare"]["closed"]]
    section.rows.append(
        Row(
            name,
            "server CPU per webhook (event-loop process)",
            f"{median(real_cpu) * 1e6:.0f} us",
            f"bare {median(bare_cpu) * 1e6:.0f} us",
            fmt_ratio(ratio(median(real_cpu), median(bare_cpu))),
            "",
            None,
            "user+system CPU of the server process / requests, from /proc; noise-robust cost figure",
        )
    )
    for label, sub in (("p50", "p50"), ("p99", "p99")):
        section.rows.append(
            Row(
                name,
                f"latency {label}, closed loop, {concurrency} connections",
                ms(median(agg("real", "closed", "latency", sub))),
                f"bare {ms(median(agg('bare', 'closed', 'latency', sub)))}",
                fmt_ratio(
                    ratio(median(agg("real", "closed", "latency", sub)), median(agg("bare", "closed", "latency", sub)))
                ),
                "",
                None,
            )
        )
    p50 = median(agg("real", "open", "latency", "p50"))
    p99_runs = agg("real", "open", "latency", "p99")
    p99 = median(p99_runs)
    section.rows.append(
        Row(
            name,
            f"latency p50, open loop {OPEN_RATE:.0f} req/s",
            ms(p50),
            f"bare {ms(median(agg('bare', 'open', 'latency', 'p50')))}",
            fmt_ratio(ratio(p50, median(agg("bare", "open", "latency", "p50")))),
            "",
            None,
        )
    )
    section.rows.append(
        Row(
            name,
            f"latency p99, open loop {OPEN_RATE:.0f} req/s",
            ms(p99),
            f"bare {ms(median(agg('bare', 'open', 'latency', 'p99')))}",
            fmt_ratio(ratio(p99, median(agg("bare", "open", "latency", "p99")))),
            "< 25 ms",
            check(p99, 0.025),
            f"{open_s:.0f} s at a fixed rate, latency from each request's due time; per-run p99 "
            f"{spread([v * 1000 for v in p99_runs])} ms; max {ms(max(agg('real', 'open', 'latency', 'max')))}",
        )
    )
    lost = real_ok - rows
    section.rows.append(
        Row(
            name,
            "webhooks lost (200 answers - new job_events rows)",
            str(lost),
            f"{real_ok} answered 200, {rows} rows",
            "",
            "0",
            lost == 0 and real_other == 0 and exit_code == 0,
            f"non-200 answers {real_other}; {ready} jobs reached model_ready, {dms} DM rows in the outbox; "
            f"{warnings} warnings or errors logged (Discord login retries aside); server exit code {exit_code}",
        )
    )
    # -- late authentic webhooks: every job already finished ---------------------------------------
    late_tp = agg("late", "closed", "throughput")
    late_paired = [ratio(a, b) for a, b in zip(late_tp, bare_tp, strict=True)]
    late_ratio = median(late_paired)
    section.rows.append(
        Row(
            name,
            f"late authentic webhooks (job finished), closed loop, {concurrency} connections (req/s)",
            f"{median(late_tp):.0f}",
            f"bare handler {median(bare_tp):.0f}",
            fmt_ratio(late_ratio),
            ">= 0.50x bare",
            check(late_ratio, 0.5, below=False),
            f"each an authentic duplicate for one of {LATE_JOBS} jobs finished before this server started (read "
            f"once, then answered from memory); median of {rounds} paired round(s); per-round ratios "
            f"{spread(late_paired)}",
        )
    )
    late_floor_tp = [f["throughput"] for f in late_floors]
    section.rows.append(
        Row(
            name,
            "ceiling: late webhooks without HTTP (req/s)",
            f"{median(late_floor_tp):.0f}",
            f"bare handler {median(bare_tp):.0f}",
            fmt_ratio(median([ratio(f, b) for f, b in zip(late_floor_tp, bare_tp, strict=True)])),
            "",
            None,
            f"the real handler with in-memory requests, as above, on the late webhooks; per-round "
            f"{spread(late_floor_tp, '{:.0f}')}; answers {late_floors[-1].get('answers') if late_floors else ''}",
        )
    )
    late_cpu = [res["server_cpu"] / max(1, res["sent"]) for res in results["late"]["closed"]]
    section.rows.append(
        Row(
            name,
            "server CPU per late webhook (event-loop process)",
            f"{median(late_cpu) * 1e6:.0f} us",
            f"bare {median(bare_cpu) * 1e6:.0f} us",
            fmt_ratio(ratio(median(late_cpu), median(bare_cpu))),
            "",
            None,
        )
    )
    section.rows.append(
        Row(
            name,
            f"late webhooks latency p99, closed loop, {concurrency} connections",
            ms(median(agg("late", "closed", "latency", "p99"))),
            f"bare {ms(median(agg('bare', 'closed', 'latency', 'p99')))}",
            fmt_ratio(
                ratio(median(agg("late", "closed", "latency", "p99")), median(agg("bare", "closed", "latency", "p99")))
            ),
            "",
            None,
        )
    )
    late_sent = sum(res["sent"] for res in results["late"]["closed"])
    late_200 = sum(res["statuses"].get("200", 0) for res in results["late"]["closed"])
    late_written = (late_after["events"] - late_before["events"]) + (late_after["outbox"] - late_before["outbox"])
    late_changed = late_after["jobs_digest"] != late_before["jobs_digest"]
    section.rows.append(
        Row(
            name,
            "late webhooks: rows written (job_events + outbox), job rows changed",
            f"{late_written}, {'changed' if late_changed else 'unchanged'}",
            f"{late_200} of {late_sent} answered 200",
            "",
            "0, unchanged",
            late_written == 0 and not late_changed and late_200 == late_sent and primer_exit == 0,
            f"answers {dict(sum((Counter(r['statuses']) for r in results['late']['closed']), Counter()))}; the "
            f"{LATE_JOBS} jobs: {late_before['states']} before, {late_after['states']} after; "
            f"{late_before['events']} event rows before and {late_after['events']} after",
        )
    )
    section.details.append(
        "Webhook runs (per round): "
        + "; ".join(
            f"{mode}/{kind}: "
            + ", ".join(
                f"{r['throughput']:.0f} req/s p99 {r['latency'].get('p99', math.nan) * 1000:.1f} ms"
                for r in results[mode][kind]
            )
            for mode in ("bare", "real")
            for kind in ("closed", "open")
        )
        + "; late/closed: "
        + ", ".join(
            f"{r['throughput']:.0f} req/s p99 {r['latency'].get('p99', math.nan) * 1000:.1f} ms"
            for r in results["late"]["closed"]
        )
    )
    if warning_lines:
        section.details.append("Real server warnings (first 5):\n" + "\n".join(warning_lines[:5]))

    def busy(kind: str) -> str:
        shares = []
        for res in results[kind]["closed"]:
            span = res["elapsed"] + 0.5
            loop_s = sum(v for k, v in res["server_threads"].items() if k.split(":")[0] == str(res["server_pid"]))
            other_s = sorted(
                (v for k, v in res["server_threads"].items() if k.split(":")[0] != str(res["server_pid"])),
                reverse=True,
            )
            shares.append(
                f"event loop {loop_s / span * 100:.0f}%, "
                f"database thread {other_s[0] / span * 100 if other_s else 0:.0f}%"
            )
        return "; ".join(shares)

    section.details.append(
        "Real server, share of wall time each thread was on a CPU during the closed-loop runs "
        "(user+system CPU time of each thread / wall time): new transitions: "
        + busy("real")
        + "; late webhooks: "
        + busy("late")
    )
    client_cpu = median([r["client_cpu"] / max(1e-9, r["elapsed"] + 0.5) for r in results["bare"]["closed"]])
    section.details.append(
        f"Load generator CPU during the bare closed-loop runs: {client_cpu * 100:.0f}% of one core "
        "(near 100% means the bare figure is bounded by the client, which flatters the ratio)."
    )
    if profile_text:
        section.details.append(
            "Profile of the real server's event loop during one closed-loop run "
            "(cProfile, top entries by own time):\n" + profile_text
        )
    if late_profile_text:
        section.details.append(
            "Profile of the real server's event loop during one closed-loop run of late webhooks "
            "(cProfile, top entries by own time):\n" + late_profile_text
        )
    return section


def _profile(tmp_path: Path, db: Path, jobs: dict[str, Any], concurrency: int, label: str = "new") -> str:
    """cProfile of the event-loop thread of a real server under closed-loop load."""
    stats_path = tmp_path / f"webhooks-{label}.prof"
    server = Server("real", db, tmp_path / f"real-profile-{label}.log", profile=stats_path)
    try:
        res = _load(server, mode="closed", concurrency=concurrency, duration=4.0, warmup=0.5, **jobs)
    finally:
        server.stop()
    buf = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=buf)
    # Every aiosqlite call is one SimpleQueue.put_nowait to its thread and one wake-up back.
    puts = sum(v[1] for k, v in stats.stats.items() if "put_nowait" in k[2] and "SimpleQueue" in k[2])  # type: ignore[attr-defined]
    buf.write(
        f"\n  {puts / max(1, res['sent']):.1f} round trips to the database thread per webhook "
        f"({puts} SimpleQueue.put_nowait calls for {res['sent']} webhooks)\n"
    )
    stats.strip_dirs().sort_stats("tottime").print_stats(18)
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    hops = [line for line in lines if "round trips" in line]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(hops + [line for line in lines[start:] if "round trips" not in line])


if __name__ == "__main__":
    started = time.perf_counter()
    from bench._common import text_table

    sec = run(quick=True)
    print(text_table(sec.rows))
    print("\n".join(sec.details))
    print(f"{time.perf_counter() - started:.1f} s")
