"""Webhook ingest on PostgreSQL, with one bot process and with two, beside SQLite in the same run.

As bench.webhooks: the bot's real webhook server (`bot.app.Application`, as `lorabot run` starts
it, Discord and the provider unreachable) in subprocesses, and the load generator
(bench._loadgen) in another; every webhook is a new (job, status), so every 200 must leave one
new job_events row. Three set-ups take turns in each round (the order alternates):

- SQLite, one process: the baseline (SQLite allows one process);
- PostgreSQL, one process;
- PostgreSQL, two processes: two servers on two ports sharing one schema, the load generator's
  connections spread over both, as behind one round-robin load balancer. The second server runs
  all along (idle during the one-process runs): both take part in the leadership as in life.

Each set-up runs closed-loop (32 connections: new transitions per second) and open-loop at a
fixed 200 webhooks per second (latency, counted from each request's due time). The jobs are the
template job of bench.webhooks (made through the real flow in each database) copied in bulk.
PostgreSQL is the benchmark server's, in a throw-away schema, at its own settings (commits wait
for the WAL to reach the disk unless the server says otherwise: the note shows
synchronous_commit). CPU is counted per webhook for the bot processes and, on PostgreSQL, for
the backends serving them (found by their client ports), and during the closed-loop runs the
backends' states are sampled every 10 ms from pg_stat_activity: where a webhook's time goes.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench._common import Row, Section, check, cpu_seconds, fmt_ratio, median, ms, ratio, run_json, spread
from bench._loadgen import secret_for, training_id_for
from bench._postgres import backend_pids, connect, create_schema, drop_schema, in_schema
from bench.webhooks import OPEN_RATE, Server, clone, template

SETUPS = ("sqlite", "pg1", "pg2")
LABELS = {"sqlite": "SQLite, 1 process", "pg1": "PostgreSQL, 1 process", "pg2": "PostgreSQL, 2 processes"}
CONCURRENCY = 32
P99_TARGET = 0.025
_COPY_BATCH = 1000  # jobs per transaction: each copied job updates the same state_counts rows


async def _pg_clone(url: str, template_job: int, count: int) -> int:
    """Copy the template job `count` times in PostgreSQL with its own ids, training ids and secret
    hashes (events and outbox rows too); returns the first new id."""
    from bot.jobs.service import hash_secret

    conn = await connect(url)
    try:
        columns = [
            str(r[0])
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = 'jobs' ORDER BY ordinal_position"
            )
            if r[0] not in ("id", "training_id", "webhook_secret_hash")
        ]
        keys = [r[0] for r in await conn.fetch("SELECT dedupe_key FROM outbox WHERE job_id = $1", template_job)]
        if any(k != f"card:{template_job}" for k in keys):
            raise RuntimeError(f"unexpected outbox rows for the template job: {keys}")
        col_sql = ", ".join(columns)
        first = int(await conn.fetchval("SELECT MAX(id) FROM jobs")) + 1
        for lo in range(first, first + count, _COPY_BATCH):
            ids = list(range(lo, min(first + count, lo + _COPY_BATCH)))
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO jobs (id, training_id, webhook_secret_hash, {col_sql})"
                    f" SELECT t.id, t.training, t.secret, {col_sql} FROM jobs,"
                    " unnest($1::bigint[], $2::text[], $3::text[]) AS t (id, training, secret) WHERE jobs.id = $4",
                    ids,
                    [training_id_for(i) for i in ids],
                    [hash_secret(secret_for(i)) for i in ids],
                    template_job,
                )
                await conn.execute(
                    "INSERT INTO job_events (job_id, status, source, payload, received_at, applied)"
                    " SELECT t.id, status, source, payload, received_at, applied FROM job_events,"
                    " unnest($1::bigint[]) AS t (id) WHERE job_id = $2",
                    ids,
                    template_job,
                )
                await conn.execute(
                    "INSERT INTO outbox (job_id, kind, dedupe_key, payload, created_at, next_attempt_at)"
                    " SELECT t.id, kind, 'card:' || t.id, payload, created_at, next_attempt_at FROM outbox,"
                    " unnest($1::bigint[]) AS t (id) WHERE job_id = $2",
                    ids,
                    template_job,
                )
        await conn.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT MAX(id) FROM jobs))")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return first


class Sampler:
    """Samples the states of some PostgreSQL backends every 10 ms from another thread, while the
    load generator runs: 'idle' is a backend waiting for the bot, 'active' one working (or
    waiting on the disk or a lock: the wait event says which)."""

    def __init__(self, url: str, pids: list[int]) -> None:
        self.url, self.pids = url, pids
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await connect(self.url)
        try:
            while not self._stop.is_set():
                for state, event in await conn.fetch(
                    "SELECT state, COALESCE(wait_event_type || ':' || wait_event, 'on CPU')"
                    " FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                    self.pids,
                ):
                    self.counts["idle (waiting for the bot)" if state == "idle" else f"{state}, {event}"] += 1
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def __enter__(self) -> Sampler:
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


class Setup:
    """One way of running the bot: its servers, the database its jobs are in, and the job ids it may use."""

    def __init__(self, name: str, servers: list[Server], next_job: int, pg_url: str | None) -> None:
        self.name, self.servers, self.next_job, self.pg_url = name, servers, next_job, pg_url
        self.ranges: list[tuple[int, int]] = []
        self.backends: list[int] = []
        self.closed: list[dict[str, Any]] = []
        self.open: list[dict[str, Any]] = []
        self.waits: Counter[str] = Counter()
        self.warm_ok = 0

    def take(self, count: int, statuses: list[str]) -> dict[str, Any]:
        first, self.next_job = self.next_job, self.next_job + count
        self.ranges.append((first, first + count))
        return {"first_job": first, "jobs": count, "statuses": statuses}

    def find_backends(self) -> list[int]:
        """The backends serving this set-up's servers now (the pools open more under load)."""
        if self.pg_url is None:
            return []
        found = asyncio.run(_backends(self.pg_url, [s.proc.pid for s in self.servers]))
        self.backends = sorted(set(self.backends) | set(found))
        return found

    def load(self, jobs: dict[str, Any], **options: Any) -> dict[str, Any]:
        pids = [s.proc.pid for s in self.servers]
        backends = self.find_backends()
        before = _cpu(pids), {pid: cpu_seconds(pid) or 0.0 for pid in backends}
        sampling = options["mode"] == "closed"
        with Sampler(self.pg_url or "", backends if sampling else []) as sampler:
            result = run_json(
                "bench._loadgen", {"ports": [s.port for s in self.servers], **jobs, **options}, timeout=300
            )
        self.waits.update(sampler.counts)
        result["server_cpu"] = _cpu(pids) - before[0]
        # Backends that appeared during the run count from 0: all their CPU was spent in it.
        after = {pid: cpu_seconds(pid) or 0.0 for pid in set(backends) | set(self.find_backends())}
        result["db_cpu"] = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in after.items()) if after else math.nan
        ok = result["statuses"].get("200", 0)
        result["ok"], result["other"] = ok, sum(v for k, v in result["statuses"].items() if k != "200")
        return result


async def _backends(url: str, client_pids: list[int]) -> list[int]:
    conn = await connect(url)
    try:
        return await backend_pids(conn, client_pids)
    finally:
        await conn.close()


async def _pg_written(url: str, ranges: list[tuple[int, int]]) -> int:
    conn = await connect(url)
    try:
        total = 0
        for span in ranges:
            total += await conn.fetchval(
                "SELECT COUNT(*) FROM job_events WHERE source = 'webhook' AND job_id >= $1 AND job_id < $2", *span
            )
        return total
    finally:
        await conn.close()


def _sqlite_written(db: Path, ranges: list[tuple[int, int]]) -> int:
    conn = sqlite3.connect(db)
    try:
        return sum(
            conn.execute(
                "SELECT COUNT(*) FROM job_events WHERE source = 'webhook' AND job_id >= ? AND job_id < ?", span
            ).fetchone()[0]
            for span in ranges
        )
    finally:
        conn.close()


async def _settings(url: str) -> dict[str, str]:
    conn = await connect(url)
    try:
        names = ("server_version", "synchronous_commit", "fsync", "shared_buffers", "max_connections")
        return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}
    finally:
        await conn.close()


def run(quick: bool, url: str) -> Section:
    schema = asyncio.run(create_schema(url, "webhooks"))
    try:
        return _measure(quick, in_schema(url, schema))
    finally:
        asyncio.run(drop_schema(url, schema))


def _measure(quick: bool, pg_url: str) -> Section:
    from bot.jobs.states import PROVIDER_PROGRESS

    statuses = [s.value for s in PROVIDER_PROGRESS]
    rounds = 1 if quick else 2
    closed_s = 3.0 if quick else 5.0
    open_s = 6.0 if quick else 10.0
    closed_jobs = 4000  # 32,000 webhooks at most per closed-loop run
    open_jobs = 500 * math.ceil(OPEN_RATE * (open_s + 1.0) / len(statuses) / 500)
    needed = 500 + rounds * (closed_jobs + open_jobs)

    with tempfile.TemporaryDirectory(prefix="lorabot-bench-pg-webhooks-") as tmp:
        tmp_path = Path(tmp)
        db = tmp_path / "bot.db"
        sqlite_first, _ = clone(db, asyncio.run(template(f"sqlite:///{db}")), needed)
        pg_template = asyncio.run(template(pg_url))
        pg_first = asyncio.run(_pg_clone(pg_url, pg_template, 2 * needed))
        settings = asyncio.run(_settings(pg_url))

        servers: list[Server] = []
        try:
            servers.append(Server("real", db, tmp_path / "sqlite.log"))
            servers.append(Server("real", None, tmp_path / "pg-a.log", database_url=pg_url))
            servers.append(Server("real", None, tmp_path / "pg-b.log", database_url=pg_url))
            setups = {
                "sqlite": Setup("sqlite", servers[:1], sqlite_first, None),
                "pg1": Setup("pg1", servers[1:2], pg_first, pg_url),
                "pg2": Setup("pg2", servers[1:3], pg_first + needed, pg_url),
            }
            for setup in setups.values():  # warm up: imports done, pools filled, caches
                warm = setup.load(
                    setup.take(500, statuses), mode="closed", concurrency=CONCURRENCY, duration=0.5, warmup=0.0
                )
                setup.warm_ok = warm["ok"]
            for r in range(rounds):
                order = SETUPS if r % 2 == 0 else tuple(reversed(SETUPS))
                for name in order:
                    setup = setups[name]
                    setup.closed.append(
                        setup.load(
                            setup.take(closed_jobs, statuses),
                            mode="closed",
                            concurrency=CONCURRENCY,
                            duration=closed_s,
                            warmup=0.5,
                        )
                    )
                for name in order:
                    setup = setups[name]
                    setup.open.append(
                        setup.load(
                            setup.take(open_jobs, statuses),
                            mode="open",
                            concurrency=CONCURRENCY,
                            rate=OPEN_RATE,
                            duration=open_s,
                            warmup=1.0,
                        )
                    )
        finally:
            exits = [server.stop() for server in servers]
        written = {
            "sqlite": _sqlite_written(db, setups["sqlite"].ranges),
            "pg": asyncio.run(_pg_written(pg_url, setups["pg1"].ranges + setups["pg2"].ranges)),
        }
        logs = {path.stem: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    return _section(setups, written, exits, logs, settings, rounds, closed_s, open_s)


def _warnings(text: str) -> int:
    """Warnings and errors a server logged, Discord's (unreachable on purpose) aside."""
    return sum(
        1
        for line in text.splitlines()
        if (" WARNING " in line or " ERROR " in line) and " bot.app:" not in line and " discord." not in line
    )


def _section(
    setups: dict[str, Setup],
    written: dict[str, int],
    exits: list[int],
    logs: dict[str, str],
    settings: dict[str, str],
    rounds: int,
    closed_s: float,
    open_s: float,
) -> Section:
    section = Section("pg webhooks")
    name = "6 pg webhooks"

    def figure(setup: str, kind: str, key: str, sub: str | None = None) -> list[float]:
        runs = getattr(setups[setup], kind)
        return [float(r[key] if sub is None else r[key].get(sub, math.nan)) for r in runs]

    lite_tp = figure("sqlite", "closed", "throughput")
    lite99 = median(figure("sqlite", "open", "latency", "p99"))
    lite_cpu = median([r["server_cpu"] / max(1, r["sent"]) for r in setups["sqlite"].closed])
    for key in ("pg1", "pg2"):
        tp = figure(key, "closed", "throughput")
        paired = [ratio(a, b) for a, b in zip(tp, lite_tp, strict=True)]
        extra = ""
        if key == "pg2":
            versus = [ratio(a, b) for a, b in zip(tp, figure("pg1", "closed", "throughput"), strict=True)]
            extra = f"; {fmt_ratio(median(versus))} the one-process figure (per round {spread(versus)})"
        section.rows.append(
            Row(
                name,
                f"new transitions/s, closed loop, {CONCURRENCY} connections: {LABELS[key]}",
                f"{median(tp):.0f}",
                f"SQLite {median(lite_tp):.0f}",
                fmt_ratio(median(paired)),
                "",
                None,
                f"median of {rounds} round(s), ratios paired per round {spread(paired)}{extra}; closed-loop p99 "
                f"{ms(median(figure(key, 'closed', 'latency', 'p99')))} (SQLite "
                f"{ms(median(figure('sqlite', 'closed', 'latency', 'p99')))})",
            )
        )
    for key in ("pg1", "pg2"):
        p99_runs = figure(key, "open", "latency", "p99")
        p99 = median(p99_runs)
        section.rows.append(
            Row(
                name,
                f"latency p99, open loop {OPEN_RATE:.0f}/s: {LABELS[key]}",
                ms(p99),
                f"SQLite {ms(lite99)}",
                fmt_ratio(ratio(p99, lite99)),
                f"< {P99_TARGET * 1000:.0f} ms",
                check(p99, P99_TARGET),
                f"{open_s:.0f} s at a fixed rate; p50 {ms(median(figure(key, 'open', 'latency', 'p50')))} (SQLite "
                f"{ms(median(figure('sqlite', 'open', 'latency', 'p50')))}); per-run p99 "
                f"{spread([v * 1000 for v in p99_runs])} ms; max {ms(max(figure(key, 'open', 'latency', 'max')))}",
            )
        )
    for key in ("pg1", "pg2"):
        runs = setups[key].closed
        bot = median([r["server_cpu"] / max(1, r["sent"]) for r in runs])
        backends = median([r["db_cpu"] / max(1, r["sent"]) for r in runs])
        section.rows.append(
            Row(
                name,
                f"CPU per new transition, bot processes + PostgreSQL backends: {LABELS[key]}",
                f"{(bot + backends) * 1e6:.0f} us" if not math.isnan(backends) else f"{bot * 1e6:.0f} us + n/a",
                f"SQLite {lite_cpu * 1e6:.0f} us",
                fmt_ratio(ratio(bot + backends, lite_cpu)),
                "",
                None,
                f"bot {bot * 1e6:.0f} us + backends {backends * 1e6:.0f} us "
                f"({len(setups[key].backends)} backends seen); closed-loop runs, user+system CPU from /proc",
            )
        )
    answered = {key: sum(r["ok"] for r in setups[key].closed + setups[key].open) for key in SETUPS}
    other = {key: sum(r["other"] for r in setups[key].closed + setups[key].open) for key in SETUPS}
    # The warm-up runs wrote rows too: count their 200s alike.
    pg_ok = answered["pg1"] + answered["pg2"] + sum(setups[k].warm_ok for k in ("pg1", "pg2"))
    lite_ok = answered["sqlite"] + setups["sqlite"].warm_ok
    lost_pg, lost_lite = pg_ok - written["pg"], lite_ok - written["sqlite"]
    warnings = {stem: _warnings(text) for stem, text in logs.items()}
    section.rows.append(
        Row(
            name,
            "webhooks lost on PostgreSQL (200 answers - new job_events rows)",
            str(lost_pg),
            f"SQLite {lost_lite}",
            "",
            "0",
            lost_pg == 0 and lost_lite == 0 and not any(exits) and other["pg1"] + other["pg2"] == 0,
            f"{pg_ok} answered 200, {written['pg']} rows (SQLite {lite_ok}, {written['sqlite']}); non-200 "
            f"answers {other}; warnings or errors logged per server (Discord aside) {warnings}; exit codes {exits}",
        )
    )
    section.details.append(
        f"PostgreSQL webhook runs ({', '.join(f'{k} {v}' for k, v in settings.items())}), per round: "
        + "; ".join(
            f"{LABELS[key]} {kind}: "
            + ", ".join(
                f"{r['throughput']:.0f}/s p99 {r['latency'].get('p99', math.nan) * 1000:.1f} ms"
                for r in getattr(setups[key], kind)
            )
            for key in SETUPS
            for kind in ("closed", "open")
        )
    )
    for key in ("pg1", "pg2"):
        waits = setups[key].waits
        total = sum(waits.values())
        if total:
            shares = ", ".join(f"{state} {n / total * 100:.0f}%" for state, n in waits.most_common(6))
            section.details.append(
                f"{LABELS[key]}, closed loop: the {len(setups[key].backends)} backends' states, sampled every "
                f"10 ms ({total} samples): {shares}"
            )
    return section
