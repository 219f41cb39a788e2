"""The store contract: every test here runs against SQLite (a temp file) and PostgreSQL (a fresh
schema), through one `Harness`, so both adapters are held to the same semantics.

Raw SQL in these tests is written with `?` placeholders and only reads counts, ids and text,
which both databases return alike.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.jobs.generation_model import NewGeneration
from bot.jobs.model import Job
from bot.jobs.states import Action, Event, EventSource
from bot.jobs.transitions import plan_transition
from bot.store import Database
from bot.store.postgres import PostgresStore
from bot.store.postgres_generations import PostgresGenerationStore
from bot.store.postgres_guild_settings import PostgresGuildSettingsStore
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore
from bot.store.sqlite_guild_settings import SqliteGuildSettingsStore
from tests.postgres import migrated_postgres

Query = Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]]


@dataclass
class Harness:
    kind: str
    jobs: SqliteStore | PostgresStore
    generations: SqliteGenerationStore | PostgresGenerationStore
    guild_settings: SqliteGuildSettingsStore | PostgresGuildSettingsStore
    clock: Any  # tests.conftest.Clock
    #: What the database raises for a violated constraint (CHECK, UNIQUE, FOREIGN KEY).
    integrity_error: type[Exception]
    query: Query
    #: Another job store on the same database with its own clock.
    job_store: Callable[[Callable[[], datetime]], SqliteStore | PostgresStore]

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self.query(sql, args)

    async def scalar(self, sql: str, *args: Any) -> Any:
        rows = await self.rows(sql, *args)
        return rows[0][0] if rows else None

    async def count(self, table: str) -> int:
        return int(await self.scalar(f"SELECT COUNT(*) FROM {table}"))

    async def counts(self, *tables: str) -> dict[str, int]:
        return {table: await self.count(table) for table in tables}


ALL_TABLES = (
    "jobs",
    "job_events",
    "outbox",
    "users",
    "kv",
    "provider_listings",
    "provider_models",
    "generations",
    "generation_images",
    "previews",
    "preview_photos",
    "guild_settings",
    "guild_setting_changes",
)


def _dollar_placeholders(sql: str) -> str:
    numbers = itertools.count(1)
    return re.sub(r"\?", lambda _match: f"${next(numbers)}", sql)


@pytest.fixture(params=["sqlite", "postgres"])
async def harness(request: pytest.FixtureRequest, clock: Any, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        db = await Database.open(str(tmp_path / "contract.db"))
        await db.migrate()

        async def sqlite_query(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in await db.fetchall(sql, args)]

        try:
            yield Harness(
                "sqlite",
                SqliteStore(db, now=clock),
                SqliteGenerationStore(db, now=clock),
                SqliteGuildSettingsStore(db, now=clock),
                clock,
                sqlite3.IntegrityError,
                sqlite_query,
                lambda now: SqliteStore(db, now=now),
            )
        finally:
            await db.close()
        return
    async with migrated_postgres() as pg:

        async def pg_query(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in await pg.fetch(_dollar_placeholders(sql), *args)]

        yield Harness(
            "postgres",
            PostgresStore(pg, now=clock),
            PostgresGenerationStore(pg, now=clock),
            PostgresGuildSettingsStore(pg, now=clock),
            clock,
            asyncpg.IntegrityConstraintViolationError,
            pg_query,
            lambda now: PostgresStore(pg, now=now),
        )


# -- shared steps -------------------------------------------------------------------------------------

SUBMIT = Event(Action.SUBMIT, EventSource.USER)


def accepted(training_id: str) -> Event:
    return Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=training_id)


def webhook(word: str) -> Event:
    return Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status=word)


async def new_job(
    store: SqliteStore | PostgresStore, owner: int = 1, *, guild: int | None = 10, name: str = "portrait"
) -> Job:
    return await store.create_job(
        owner_id=owner, guild_id=guild, channel_id=100, name=name, params={"instance_prompt": "p"}, image_count=6
    )


async def submitted_job(
    store: SqliteStore | PostgresStore, owner: int = 1, *, guild: int | None = 10, name: str = "portrait"
) -> Job:
    job = await new_job(store, owner, guild=guild, name=name)
    await store.apply_event(job.id, SUBMIT, plan_transition)
    await store.set_card(job.id, job.channel_id, 9000 + job.id)  # the Start flow posts the card next
    return await store.require_job(job.id)


async def ready_job(store: SqliteStore | PostgresStore, owner: int = 1, *, training_id: str = "READY") -> Job:
    job = await submitted_job(store, owner)
    await store.apply_event(job.id, accepted(training_id), plan_transition)
    return (await store.apply_event(job.id, webhook("model_ready"), plan_transition)).after


def new_generation(job: Job, *, kind: str = "imagine", samples: int = 2, seed: int = 7) -> NewGeneration:
    return NewGeneration(
        job_id=job.id,
        owner_id=job.owner_id,
        guild_id=job.guild_id,
        channel_id=123456789012345678,
        kind=kind,
        user_prompt="on a beach",
        prompt="photo of sks man, on a beach",
        negative_prompt=None,
        strength=0.8,
        samples=samples,
        seed=seed,
        width=1024,
        height=1024,
        base_model_id="base",
        lora_model=job.training_id or "lora",
        safety_checker=True,
        age_restricted=False,
    )
