"""Benchmark 3: the store at scale, 1,000,000 jobs across 100,000 users.

The database is made once by running the real migrations, then bulk-inserting jobs with
executemany in big transactions, and cached in bench/.cache keyed by a hash of the migration
files (and the generator's version), so later runs start at once.

The data: job counts per user follow a heavy tail (most users have a handful of jobs; the
busiest have about two years of the default daily quota, ~2,000); job ids grow with time over
two years; 99.7 % of jobs are finished (model_ready, failed, cancelled, expired) and ~3,000 are
active, most of them updated within the last minutes and a few hundred overdue for the
reconciler.

Queries run through the real `SqliteStore` (aiosqlite thread, row parsing into `Job`), as the bot
runs them; the baseline is the same SQL with the same parameters through plain sqlite3 in the
benchmark thread (the SQL floor). The SQL is captured from the SqliteStore's own calls, so the
EXPLAIN QUERY PLAN shown is of the statements the bot really sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import CACHE, Row, Section, check, fmt_ratio, ms, percentile, ratio

GENERATOR_VERSION = "v2"
USERS = 100_000
JOBS = 1_000_000
ACTIVE = 3_000
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the generated data's "now"
GUILDS = [290926798626357999 + i for i in range(400)]
NAMES = ("sks man", "ohwx woman", "my dog rex", "zwx cat", "brand logo", "couple shoot", "me v2", "portrait set")
TERMINAL_MIX = (("model_ready", 0.82), ("failed", 0.07), ("cancelled", 0.05), ("expired", 0.06))
ACTIVE_STATES = (
    "submitting",
    "uncertain",
    "deploying_gpu",
    "training_started",
    "training_success",
    "trained_model_compressing",
    "trained_model_uploading",
    "trained_model_uploaded",
    "deploying_model",
)


def schema_key() -> str:
    from bot.store import load_migrations

    digest = hashlib.sha256(GENERATOR_VERSION.encode())
    migrations = load_migrations()
    for migration in migrations:
        digest.update(f"{migration.version:04d}_{migration.name}.sql".encode() + migration.sql.encode())
    versions = len(migrations)
    return f"schema{versions}-{digest.hexdigest()[:10]}"


def _owner_counts(rng: random.Random) -> list[int]:
    """Jobs per user: a heavy tail, clipped to [1, 2190] (3 a day for two years), summing to JOBS."""
    raw = [min(2190.0, rng.paretovariate(1.1)) for _ in range(USERS)]
    scale = JOBS / sum(raw)
    counts = [max(1, min(2190, int(v * scale))) for v in raw]
    diff = JOBS - sum(counts)
    order = sorted(range(USERS), key=lambda u: counts[u])
    i = 0
    while diff != 0:  # nudge the smallest (or, when over, the largest) users until the sum is exact
        u = order[i % USERS] if diff > 0 else order[-1 - i % USERS]
        if diff > 0 and counts[u] < 2190:
            counts[u] += 1
            diff -= 1
        elif diff < 0 and counts[u] > 1:
            counts[u] -= 1
            diff += 1
        i += 1
    return counts


def generate(path: Path, log: Any = print) -> None:
    """Migrate an empty database with the bot's own code, then bulk-insert the jobs."""
    from bot.store import Database

    tmp = path.with_suffix(".tmp")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)

    async def migrate() -> None:
        db = await Database.open(str(tmp))
        await db.migrate()
        await db.close()

    asyncio.run(migrate())
    started = time.perf_counter()
    rng = random.Random(20260601)
    counts = _owner_counts(rng)
    owners = [100_000_000_000_000_000 + u for u, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(owners)
    home_guild = {o: GUILDS[o % len(GUILDS)] for o in set(owners)}
    span = timedelta(days=730).total_seconds()
    start = NOW - timedelta(days=730)
    first_active = JOBS - ACTIVE - 50  # the newest jobs: 50 previews after the active ones
    params = json.dumps(
        {
            "base_model": "sdxl",
            "class_prompt": "photo of a man",
            "instance_prompt": "photo of sks man",
            "lora_type": "lora",
            "max_train_steps": None,
            "negative_prompt": None,
            "seed": None,
            "training_type": "man",
        },
        sort_keys=True,
    )
    states = [state for state, _ in TERMINAL_MIX]
    weights = [weight for _, weight in TERMINAL_MIX]

    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")  # a half-built file is thrown away anyway
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -512000")
    sql = (
        "INSERT INTO jobs (id, owner_id, guild_id, channel_id, card_channel_id, card_message_id, name, state,"
        " provider_status, training_id, params, image_count, image_urls, webhook_secret_hash, eta_text, last_error,"
        " created_at, updated_at, progressed_at, submitted_at, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def rows(lo: int, hi: int) -> Any:
        for index in range(lo, hi):
            job_id = index + 1
            owner = owners[index]
            created = start + timedelta(seconds=span * index / JOBS)
            if index >= JOBS - 50:
                state = "preview"
                created = NOW - timedelta(seconds=rng.randrange(600))
            elif index >= first_active:
                state = rng.choice(ACTIVE_STATES)
                created = NOW - timedelta(seconds=rng.randrange(3 * 3600))
            else:
                state = rng.choices(states, weights)[0]
            dm = rng.random() < 0.2
            guild: int | None = None if dm else home_guild[owner]
            channel = owner + 7 if guild is None else guild + 1000 + (owner % 5)
            images = rng.randrange(5, 11)
            submitted = state not in ("preview", "expired")
            if state == "preview" or state == "expired":
                updated = created + timedelta(seconds=rng.randrange(1, 600))
            elif state in ACTIVE_STATES:
                # Most active jobs heard from within the reconcile interval; ~10 % are overdue.
                age = rng.randrange(3600, 3 * 3600) if rng.random() < 0.1 else rng.randrange(0, 290)
                updated = max(created, NOW - timedelta(seconds=age))
            else:
                updated = created + timedelta(seconds=rng.randrange(1200, 5400))
            # A JSON list of plain URLs (nothing to escape), written out directly: json.dumps per row
            # would be the generator's biggest cost.
            prefix = f"https://cdn.discordapp.com/attachments/{channel}/"
            urls = (
                '["'
                + '", "'.join(
                    f"{prefix}{job_id * 16 + k}/crop{k + 1}.jpg?ex=6745a1b2&is=67445032&hm={job_id * 40503 + k:016x}"
                    for k in range(images)
                )
                + '"]'
                if submitted
                else None
            )
            training = str(40_000_000 + job_id) if submitted and state != "submitting" else None
            created_text, updated_text = created.isoformat(), updated.isoformat()
            yield (
                job_id,
                owner,
                guild,
                channel,
                channel,
                1_200_000_000_000_000_000 + job_id,
                f"{rng.choice(NAMES)} {rng.randrange(1, 40)}",
                state,
                None if state in ("preview", "expired", "submitting", "uncertain") else state,
                training,
                params,
                images,
                urls,
                hashlib.sha256(str(job_id).encode()).hexdigest() if submitted else None,
                None,
                "Stalled: no progress from the provider for 3 hours." if state == "failed" else None,
                created_text,
                updated_text,
                updated_text,
                (created + timedelta(seconds=30)).isoformat() if submitted else None,
                updated_text if state in ("model_ready", "failed", "cancelled", "expired") else None,
            )

    # Build the migration's secondary indexes after the data (a sorted build is far faster than
    # 1M random inserts), from their own CREATE INDEX text, so the schema stays exactly the same.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL"
    ).fetchall()
    for index_name, _ in indexes:
        conn.execute(f'DROP INDEX "{index_name}"')
    step = 100_000
    for lo in range(0, JOBS, step):
        conn.execute("BEGIN")
        conn.executemany(sql, rows(lo, min(JOBS, lo + step)))
        conn.execute("COMMIT")
        log(f"  store: generated {min(JOBS, lo + step):,} jobs ({time.perf_counter() - started:.0f} s)")
    for _, create in indexes:
        conn.execute(create)
    log(f"  store: indexes built ({time.perf_counter() - started:.0f} s)")
    conn.execute("INSERT INTO users (user_id) SELECT DISTINCT owner_id FROM jobs")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def database(log: Any = print) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"store-{schema_key()}-{JOBS // 1000}k.db"
    if not path.exists():
        log(f"  store: generating {JOBS:,} jobs into {path} (cached for later runs)")
        generate(path, log)
        os.sync()  # let the 2 GB of fresh writes reach the disk before anything is timed
    return path


class Recorder:
    """Wraps Database.fetchall/fetchone to capture the SQL and parameters the SqliteStore sends."""

    def __init__(self, db: Any) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        for name in ("fetchall", "fetchone"):
            original = getattr(db, name)

            async def wrapper(sql: str, params: Any = (), _original: Any = original) -> Any:
                self.calls.append((sql, tuple(params)))
                return await _original(sql, params)

            setattr(db, name, wrapper)


async def _measure(path: Path, samples: int) -> dict[str, Any]:
    from bot.store import Database
    from bot.store.sqlite import SqliteStore

    db = await Database.open(str(path))
    store = SqliteStore(db, now=lambda: NOW)
    recorder = Recorder(db)
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    raw.row_factory = sqlite3.Row
    try:
        owners: list[int] = [r[0] for r in raw.execute("SELECT owner_id FROM jobs ORDER BY random() LIMIT 5000")]
        heavy = [
            r[0] for r in raw.execute("SELECT owner_id FROM jobs GROUP BY owner_id ORDER BY COUNT(*) DESC LIMIT 20")
        ]
        busiest = heavy[0]
        busiest_count = raw.execute("SELECT COUNT(*) FROM jobs WHERE owner_id = ?", (busiest,)).fetchone()[0]
        rng = random.Random(7)
        cutoff = NOW - timedelta(seconds=300)

        def pick_owner() -> int:
            # Half the calls from users picked per job (busy users call more), a quarter from the
            # 20 heaviest users, a quarter from the single busiest.
            roll = rng.random()
            return rng.choice(owners) if roll < 0.5 else rng.choice(heavy) if roll < 0.75 else busiest

        def search_text() -> str:
            return rng.choice(["", "sks", "man 1", "ohwx", str(rng.randrange(1, 999_999)), "zzz-no-match", "#12"])

        cases: dict[str, Any] = {
            "mymodels page 1 (jobs_for_owner limit 10)": lambda: store.jobs_for_owner(pick_owner(), limit=10, offset=0),
            "mymodels page 5 (offset 40)": lambda: store.jobs_for_owner(pick_owner(), limit=10, offset=40),
            "mymodels last page of the busiest user": lambda: store.jobs_for_owner(
                busiest, limit=10, offset=(busiest_count // 10) * 10
            ),
            "mymodels page count (count_jobs_for_owner)": lambda: store.count_jobs_for_owner(pick_owner()),
            "status autocomplete (search_owner_jobs 25)": lambda: store.search_owner_jobs(
                pick_owner(), search_text(), limit=25
            ),
            "reconciler overdue scan (overdue_jobs 100)": lambda: store.overdue_jobs(cutoff, limit=100),
        }
        for call in cases.values():  # warm the page cache and the statement cache
            for _ in range(20):
                await call()
        out: dict[str, Any] = {"busiest": busiest_count, "cases": {}}
        timings: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in cases}
        last: dict[str, tuple[str, tuple[Any, ...]]] = {}
        ping: list[float] = []
        # Round-robin over the cases, each SqliteStore call followed at once by the same statement
        # straight through sqlite3, so a burst of noise from the shared machine hits all alike.
        for _ in range(samples):
            started = time.perf_counter()
            await db.ping()
            ping.append(time.perf_counter() - started)
            for label, call in cases.items():
                recorder.calls.clear()
                started = time.perf_counter()
                await call()
                timings[label][0].append(time.perf_counter() - started)
                sql, params = last[label] = recorder.calls[-1]
                started = time.perf_counter()
                raw.execute(sql, params).fetchall()
                timings[label][1].append(time.perf_counter() - started)
        out["ping"] = ping
        for label, (store_times, raw_times) in timings.items():
            worst_sql, worst_params = last[label]
            plan = [r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + worst_sql, worst_params)]
            out["cases"][label] = {"store": store_times, "raw": raw_times, "sql": worst_sql, "plan": plan}
        overdue_total = raw.execute(
            "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('model_ready','cancelled','failed','expired')"
            " AND updated_at < ?",
            (cutoff.isoformat(),),
        ).fetchone()[0]
        active_total = raw.execute(
            "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('model_ready','cancelled','failed','expired')"
        ).fetchone()[0]
        out["overdue_total"], out["active_total"] = overdue_total, active_total
        return out
    finally:
        raw.close()
        await db.close()


TARGETS = {
    "mymodels page 1 (jobs_for_owner limit 10)": (0.005, "jobs_owner_newest"),
    "mymodels page 5 (offset 40)": (0.005, "jobs_owner_newest"),
    "mymodels last page of the busiest user": (None, "jobs_owner_newest"),
    "mymodels page count (count_jobs_for_owner)": (None, "jobs_owner_newest"),
    "status autocomplete (search_owner_jobs 25)": (0.005, "jobs_owner_newest"),
    "reconciler overdue scan (overdue_jobs 100)": (0.010, "jobs_active_updated"),
}


def run(quick: bool, log: Any = print) -> Section:
    section = Section("store")
    path = database(log)
    samples = 300 if quick else 2000
    result = asyncio.run(_measure(path, samples))
    name = "3 store"
    size_mb = path.stat().st_size / 1e6
    ping99 = percentile(result["ping"], 99)
    for label, case in result["cases"].items():
        limit, index = TARGETS[label]
        p50, p99 = percentile(case["store"], 50), percentile(case["store"], 99)
        raw99 = percentile(case["raw"], 99)
        uses_index = any(index in step for step in case["plan"])
        # Targets are on p99 (the overdue scan's "under 10 ms" too; its maximum is in the note).
        passed = None if limit is None else (bool(check(p99, limit)) and uses_index)
        target = "" if limit is None else f"p99 < {limit * 1000:.0f} ms, uses {index}"
        section.rows.append(
            Row(
                name,
                f"{label} p99",
                ms(p99),
                f"sqlite3 direct {ms(raw99)}",
                fmt_ratio(ratio(p99, raw99)),
                target,
                passed,
                f"p50 {ms(p50)}, max {ms(max(case['store']))}; {samples} calls; "
                f"plan {'uses' if uses_index else 'does NOT use'} {index}",
            )
        )
    section.rows.append(
        Row(
            name,
            "round trip floor: Database.ping (SELECT 1) p99",
            ms(ping99),
            "",
            "",
            "",
            None,
            f"{JOBS:,} jobs / {USERS:,} users, {size_mb:,.0f} MB; busiest user {result['busiest']:,} jobs; "
            f"{result['active_total']:,} active jobs, {result['overdue_total']:,} overdue",
        )
    )
    plans = []
    for label, case in result["cases"].items():
        plans.append(f"-- {label}\n{case['sql']}\n  QUERY PLAN: " + " | ".join(case["plan"]))
    section.details.append("EXPLAIN QUERY PLAN of the statements the SqliteStore sent:\n" + "\n".join(plans))
    return section


if __name__ == "__main__":
    from bench._common import text_table

    t = time.perf_counter()
    sec = run(quick=True)
    print(text_table(sec.rows))
    print("\n".join(sec.details))
    print(f"{time.perf_counter() - t:.1f} s")
