"""The 1,000,000-job database on PostgreSQL: the very rows of the SQLite one (bench.store), cached.

It lives in a schema of the benchmark server's database named `bench_1m_<hash>`, the hash
covering the PostgreSQL migrations and the SQLite dataset's own key (its migrations and
generator), so a change to either rebuilds it and the two databases always hold the same jobs.

Building it (about a minute, once): the real PostgreSQL migrations on an empty schema, then
COPY of every job row read from the cached SQLite file (times parsed, JSON passed as text), with
the migration's secondary indexes dropped first and rebuilt afterwards from their own definitions
(a sorted build is far faster than a million inserts into them), as bench.store does on SQLite.
The triggers that keep `state_counts` are disabled during the COPY and the counts written once
from the table: fired a million times in one transaction, they update one counter row a million
times, and each update walks the chain of that row's earlier versions, which only grows until
the transaction ends (about 1.3 s for the first 10,000 rows, 21 s for the next 20,000). Then
VACUUM ANALYZE, and the schema is renamed into place: a half-built one is never used.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import store
from bench._postgres import connect, in_schema

BUILDER_VERSION = "v1"
PREFIX = "bench_1m_"
_BATCH = 20_000
# The jobs columns of both schemas (the SQLite names; PostgreSQL's are the same).
_TIMES = ("created_at", "updated_at", "progressed_at", "submitted_at", "finished_at")


def schema_name() -> str:
    from bot.store.pg_database import load_postgres_migrations

    digest = hashlib.sha256(f"{BUILDER_VERSION}:{store.schema_key()}".encode())
    for migration in load_postgres_migrations():
        digest.update(f"{migration.version:04d}_{migration.name}.sql".encode() + migration.sql.encode())
    return f"{PREFIX}{digest.hexdigest()[:12]}"


async def _existing(conn: Any) -> list[str]:
    rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1", PREFIX + "%")
    return [str(row[0]) for row in rows]


async def dataset(url: str, sqlite_path: Path, log: Any = print) -> tuple[str, str]:
    """The cached schema's name (built first if missing) and what it says about its build."""
    name = schema_name()
    conn = await connect(url)
    try:
        schemas = await _existing(conn)
        if name not in schemas:
            await _drop_abandoned(conn, schemas, name, log)
            await _build(url, conn, name, sqlite_path, log)
            for stale in await _existing(conn):
                if stale != name and "_build" not in stale:
                    log(f"  pg store: dropping {stale}, built from older migrations")
                    await conn.execute(f'DROP SCHEMA "{stale}" CASCADE')
        made = await conn.fetchval(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1", name
        )
    finally:
        await conn.close()
    return name, str(made or "")


async def _drop_abandoned(conn: Any, schemas: list[str], name: str, log: Any) -> None:
    """Half-built schemas of builds that died (their process is gone)."""
    for schema in schemas:
        if not schema.startswith(f"{name}_build"):
            continue
        pid = int(schema.rsplit("_build", 1)[1] or 0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log(f"  pg store: dropping {schema}, left by a build that did not finish")
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        except PermissionError:
            pass  # someone else's process, still alive


async def _build(url: str, admin: Any, name: str, sqlite_path: Path, log: Any) -> None:
    from bot.store.pg_database import PostgresDatabase

    building = f"{name}_build{os.getpid()}"
    log(f"  pg store: copying the {store.JOBS:,} jobs of {sqlite_path.name} into schema {name} (cached for later runs)")
    started = time.perf_counter()
    await admin.execute(f'DROP SCHEMA IF EXISTS "{building}" CASCADE')
    await admin.execute(f'CREATE SCHEMA "{building}"')
    try:
        db = await PostgresDatabase.open(in_schema(url, building))
        try:
            await db.migrate()
        finally:
            await db.close()
        conn = await connect(in_schema(url, building, synchronous_commit="off"))
        try:
            await _fill(conn, sqlite_path, log, started)
            vacuumed = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE) jobs")
            await conn.execute("VACUUM (ANALYZE) users")
            log(f"  pg store: VACUUM ANALYZE ({time.perf_counter() - vacuumed:.0f} s)")
        finally:
            await conn.close()
        took = time.perf_counter() - started
        when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        note = f"built {when} in {took:.0f} s from the cached SQLite file {sqlite_path.name}"
        await admin.execute(f"COMMENT ON SCHEMA \"{building}\" IS '{note}'")
        try:
            await admin.execute(f'ALTER SCHEMA "{building}" RENAME TO "{name}"')
        except Exception as error:  # another run built it meanwhile: use theirs
            if name not in await _existing(admin):
                raise
            log(f"  pg store: {name} appeared meanwhile ({type(error).__name__}); using it")
            await admin.execute(f'DROP SCHEMA "{building}" CASCADE')
        log(f"  pg store: built in {took:.0f} s")
    except BaseException:
        await asyncio.shield(admin.execute(f'DROP SCHEMA IF EXISTS "{building}" CASCADE'))
        raise


async def _fill(conn: Any, sqlite_path: Path, log: Any, started: float) -> None:
    source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        columns = [str(row[1]) for row in source.execute("PRAGMA table_info(jobs)")]
        target = [
            str(row[0])
            for row in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = 'jobs'"
            )
        ]
        if sorted(columns) != sorted(target):
            raise RuntimeError(f"the jobs columns differ: SQLite {columns}, PostgreSQL {target}")
        times = [columns.index(c) for c in _TIMES]
        # The secondary indexes (the primary key and the UNIQUE training_id stay: they check the rows).
        indexes = await conn.fetch(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i"
            " JOIN pg_class AS c ON c.oid = i.indexrelid WHERE i.indrelid = 'jobs'::regclass AND NOT i.indisunique"
        )
        async with conn.transaction():
            await conn.execute("ALTER TABLE jobs DISABLE TRIGGER USER")
            for index_name, _ in indexes:
                await conn.execute(f'DROP INDEX "{index_name}"')
            cursor = source.execute(f"SELECT {', '.join(columns)} FROM jobs ORDER BY id")
            done = 0
            while batch := cursor.fetchmany(_BATCH):
                records = []
                for row in batch:
                    values = list(row)
                    for i in times:
                        if values[i] is not None:
                            values[i] = datetime.fromisoformat(values[i])
                    records.append(values)
                await conn.copy_records_to_table("jobs", records=records, columns=columns)
                done += len(batch)
                if done % 200_000 == 0:
                    log(f"  pg store: copied {done:,} jobs ({time.perf_counter() - started:.0f} s)")
            await conn.execute("ALTER TABLE jobs ENABLE TRIGGER USER")
            await conn.execute("DELETE FROM state_counts WHERE entity = 'jobs'")
            await conn.execute(
                "INSERT INTO state_counts (entity, state, rows) SELECT 'jobs', state, COUNT(*) FROM jobs GROUP BY state"
            )
            await conn.execute("INSERT INTO users (user_id) SELECT DISTINCT owner_id FROM jobs")
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('jobs', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM jobs"
            )
            for _, definition in indexes:
                await conn.execute(definition)
            log(f"  pg store: indexes built ({time.perf_counter() - started:.0f} s)")
    finally:
        source.close()
