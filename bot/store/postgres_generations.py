"""The PostgreSQL generation store: implements the domain's `GenerationStore` over asyncpg, with
the semantics of `bot.store.sqlite_generations.SqliteGenerationStore`.

A change of a generation's state, its pictures and the outbox item it causes are one guarded
statement (`bot.store.pg_guarded`), like a job's state change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg import Record

from bot.jobs.generation_model import (
    Generation,
    GenerationChange,
    GenerationNotFound,
    GenerationPlan,
    GenerationPlanner,
    GenerationState,
    NewGeneration,
    StoredPicture,
)
from bot.jobs.model import JobNotFound
from bot.store.database import utcnow
from bot.store.pg_database import Connection, PostgresDatabase
from bot.store.pg_guarded import guarded_write
from bot.store.pg_outbox import draft_arrays, draft_ctes
from bot.store.pg_rows import generation_from_record
from bot.store.postgres import utc

#: Columns a plan may update besides `state`, as in SQLite.
PLAN_COLUMNS = (
    "request_id",
    "attempts",
    "last_error",
    "submitted_at",
    "finished_at",
    "next_check_at",
    "reply_to_message_id",
)
_IN_FLIGHT = [GenerationState.SUBMITTING.value, GenerationState.PROCESSING.value]
_SELECT = "SELECT *, md5(generations::text) AS row_hash FROM generations WHERE id = $1"

#: $1 id, $2 the row's hash as the planner saw it, $3 the new state (NULL: unchanged), $4 terminal?,
#: $5 now, $6 the names of the plan's columns, $7-$13 their values, $14-$17 the pictures
#: (positions, bytes, content types, NSFW flags), $18-$21 the outbox drafts.
_APPLY = (  # built at import time from constants; values are parameters
    "WITH generation AS (UPDATE generations SET"  # noqa: S608
    " state = COALESCE($3, state),"
    " updated_at = $5,"
    + ",".join(
        f" {name} = CASE WHEN '{name}' = ANY($6::text[]) THEN ${7 + index} ELSE {name} END"
        for index, name in enumerate(PLAN_COLUMNS)
        if name != "finished_at"
    )
    + ", finished_at = CASE WHEN $4 THEN $5 WHEN 'finished_at' = ANY($6::text[]) THEN $11 ELSE finished_at END"
    " WHERE id = $1 AND md5(generations::text) = $2 RETURNING *)"
    ", pictures AS (INSERT INTO generation_images (generation_id, position, data, content_type, nsfw)"
    "   SELECT generation.id, p.position, p.data, p.content_type, p.nsfw FROM generation,"
    "   unnest($14::int[], $15::bytea[], $16::text[], $17::bool[]) AS p (position, data, content_type, nsfw))"
    + draft_ctes("generation", "job_id", 18, "$5")
    + " SELECT * FROM generation"
)
assert PLAN_COLUMNS.index("finished_at") == 11 - 7


def _plan_values(plan: GenerationPlan) -> tuple[list[str], list[Any]]:
    unknown = set(plan.updates) - set(PLAN_COLUMNS)
    if unknown:
        raise ValueError(f"a generation plan may not update {sorted(unknown)}")
    values: dict[str, Any] = dict.fromkeys(PLAN_COLUMNS)
    for name, value in plan.updates.items():
        values[name] = utc(value) if isinstance(value, datetime) else value
    return list(plan.updates), [values[name] for name in PLAN_COLUMNS]


class PostgresGenerationStore:
    """Repository of generations over the same database (and clock) as the job `PostgresStore`."""

    def __init__(
        self, db: PostgresDatabase, *, now: Callable[[], datetime] = utcnow, optimistic_attempts: int = 2
    ) -> None:
        self.db = db
        self.now = now
        self.optimistic_attempts = optimistic_attempts

    async def create(self, new: NewGeneration) -> Generation:
        """A new generation in `queued`: it exists before anything is sent anywhere.

        A job has at most one sample set; creating a second returns the first.
        """
        now = utc(self.now())
        values = {
            **{name: getattr(new, name) for name in NewGeneration.__slots__},
            "state": GenerationState.QUEUED.value,
            "created_at": now,
            "updated_at": now,
            "next_check_at": now,
        }
        columns = ", ".join(values)
        marks = ", ".join(f"${index}" for index in range(1, len(values) + 1))
        try:
            row = await self.db.fetchrow(
                f"INSERT INTO generations ({columns}) VALUES ({marks}) RETURNING *",  # noqa: S608 (field names)
                *values.values(),
            )
        except asyncpg.ForeignKeyViolationError:
            raise JobNotFound(new.job_id) from None
        except asyncpg.UniqueViolationError:
            existing = await self.sample_set(new.job_id) if new.kind == "sample" else None
            if existing is None:
                raise
            return existing  # one sample set per job: another pass made it first
        assert row is not None
        return generation_from_record(row)

    async def get(self, generation_id: int) -> Generation | None:
        row = await self.db.fetchrow("SELECT * FROM generations WHERE id = $1", generation_id)
        return generation_from_record(row) if row else None

    async def sample_set(self, job_id: int) -> Generation | None:
        """The pictures made for a job's ready DM, if any were asked for."""
        row = await self.db.fetchrow("SELECT * FROM generations WHERE job_id = $1 AND kind = 'sample'", job_id)
        return generation_from_record(row) if row else None

    async def due(self, *, limit: int = 50) -> list[Generation]:
        """Queued and processing generations whose next check is due, oldest first."""
        rows = await self.db.fetch(
            "SELECT * FROM generations WHERE state IN ('queued', 'processing') AND next_check_at <= $1"
            " ORDER BY next_check_at, id LIMIT $2",
            utc(self.now()),
            limit,
        )
        return [generation_from_record(row) for row in rows]

    async def next_due(self, *, include_queued: bool = True) -> datetime | None:
        """When the runner should look next (queued generations left out while it is at capacity)."""
        states = "('queued', 'processing')" if include_queued else "('processing')"
        value: datetime | None = await self.db.fetchval(
            f"SELECT MIN(next_check_at) FROM generations WHERE state IN {states}"  # noqa: S608 (constants)
        )
        return value

    async def in_flight(self) -> int:
        """Generations the provider has (or may be about to have) in its queue."""
        return int(await self.db.fetchval("SELECT COUNT(*) FROM generations WHERE state = ANY($1::text[])", _IN_FLIGHT))

    async def ids_in_state(self, state: GenerationState) -> list[int]:
        rows = await self.db.fetch("SELECT id FROM generations WHERE state = $1 ORDER BY id", state.value)
        return [int(row[0]) for row in rows]

    async def recent_for_owner(self, owner_id: int, since: datetime) -> list[tuple[datetime, int]]:
        """(created_at, pictures asked) of the owner's generations since `since`, oldest first,
        not counting those that failed or were never sent (quotas count what may cost credits)."""
        rows = await self.db.fetch(
            "SELECT created_at, samples FROM generations WHERE owner_id = $1 AND created_at >= $2"
            " AND kind = 'imagine' AND state <> 'failed' ORDER BY created_at",
            owner_id,
            utc(since),
        )
        return [(row[0], int(row[1])) for row in rows]

    async def pictures_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        """How many pictures each of these models has made."""
        if not job_ids:
            return {}
        rows = await self.db.fetch(
            "SELECT g.job_id, COUNT(*) FROM generation_images AS i JOIN generations AS g"
            " ON g.id = i.generation_id WHERE g.job_id = ANY($1::bigint[]) GROUP BY g.job_id",
            list(job_ids),
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def pictures(self, generation_id: int) -> list[StoredPicture]:
        rows = await self.db.fetch(
            "SELECT position, data, content_type, nsfw, url FROM generation_images WHERE generation_id = $1"
            " ORDER BY position",
            generation_id,
        )
        return [StoredPicture(int(r[0]), r[1], str(r[2]), bool(r[3]), r[4]) for r in rows]

    async def pictures_posted(self, generation_id: int, urls: Sequence[str | None]) -> None:
        """The pictures are on Discord now: keep their links, drop their bytes."""
        await self.db.execute(
            "UPDATE generation_images SET data = NULL,"
            " url = CASE WHEN position < cardinality($2::text[]) THEN ($2::text[])[position + 1] ELSE url END"
            " WHERE generation_id = $1",
            generation_id,
            list(urls),
        )

    async def set_reply_to(self, generation_id: int, message_id: int) -> None:
        await self.db.execute(
            "UPDATE generations SET reply_to_message_id = $2 WHERE id = $1", generation_id, message_id
        )

    # -- the one state-change path ------------------------------------------------------------------

    async def apply(self, generation_id: int, planner: GenerationPlanner) -> GenerationChange:
        """Apply what `planner` decides for the generation: state, pictures, outbox, atomically."""
        now = utc(self.now())

        async def attempt(conn: Connection, row: Record) -> GenerationChange | None:
            before = generation_from_record(row)
            plan = planner(before)
            updated, values = _plan_values(plan)
            new_state = plan.new_state
            after = await conn.fetchrow(
                _APPLY,
                generation_id,
                row["row_hash"],
                new_state.value if new_state else None,
                bool(new_state and new_state.is_terminal),
                now,
                updated,
                *values,
                list(range(len(plan.pictures))),
                [picture.data for picture in plan.pictures],
                [picture.content_type for picture in plan.pictures],
                [picture.nsfw for picture in plan.pictures],
                *draft_arrays(plan.outbox),
            )
            return None if after is None else GenerationChange(before, generation_from_record(after), plan)

        return await guarded_write(
            self.db,
            _SELECT,
            generation_id,
            attempt,
            missing=lambda: GenerationNotFound(generation_id),
            optimistic_attempts=self.optimistic_attempts,
        )
