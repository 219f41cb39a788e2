"""The SQLite generation store: generation rows, their pictures and the one write path.

Like jobs, every change of a generation's state is applied in one transaction with the outbox
item it causes (`GenerationStore.apply`), so a crash can neither lose a result nor post one for a
change that did not happen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from bot.jobs.generation_model import (
    Generation,
    GenerationChange,
    GenerationNotFound,
    GenerationPlanner,
    GenerationState,
    NewGeneration,
    StoredPicture,
)
from bot.jobs.model import JobNotFound
from bot.store.database import Database, utcnow
from bot.store.rows import generation_from_row
from bot.store.sqlite import iso, write_outbox

#: Columns a plan may update besides `state`.
_PLAN_COLUMNS = frozenset(
    {"request_id", "attempts", "last_error", "submitted_at", "finished_at", "next_check_at", "reply_to_message_id"}
)
_IN_FLIGHT = (GenerationState.SUBMITTING.value, GenerationState.PROCESSING.value)


class SqliteGenerationStore:
    """Repository of generations over the same database (and clock) as the job `SqliteStore`."""

    def __init__(self, db: Database, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.now = now

    async def create(self, new: NewGeneration) -> Generation:
        """A new generation in `queued`: it exists before anything is sent anywhere.

        A job has at most one sample set; creating a second returns the first.
        """
        now = iso(self.now())
        values = {
            **{name: getattr(new, name) for name in NewGeneration.__slots__},
            "safety_checker": int(new.safety_checker),
            "age_restricted": int(new.age_restricted),
            "state": GenerationState.QUEUED.value,
            "created_at": now,
            "updated_at": now,
            "next_check_at": now,
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(f"INSERT INTO generations ({columns}) VALUES ({marks})", tuple(values.values()))  # noqa: S608
            return int(cursor.lastrowid or 0)

        try:
            generation_id = await self.db.run_transaction(insert)
        except sqlite3.IntegrityError as error:
            if "FOREIGN KEY" in str(error):
                raise JobNotFound(new.job_id) from None
            existing = await self.sample_set(new.job_id) if new.kind == "sample" else None
            if existing is None:
                raise
            return existing  # one sample set per job: another pass made it first
        generation = await self.get(generation_id)
        assert generation is not None
        return generation

    async def get(self, generation_id: int) -> Generation | None:
        row = await self.db.fetchone("SELECT * FROM generations WHERE id = ?", (generation_id,))
        return generation_from_row(row) if row else None

    async def sample_set(self, job_id: int) -> Generation | None:
        """The pictures made for a job's ready DM, if any were asked for."""
        row = await self.db.fetchone("SELECT * FROM generations WHERE job_id = ? AND kind = 'sample'", (job_id,))
        return generation_from_row(row) if row else None

    async def due(self, *, limit: int = 50) -> list[Generation]:
        """Queued and processing generations whose next check is due, oldest first."""
        rows = await self.db.fetchall(
            "SELECT * FROM generations WHERE state IN ('queued', 'processing') AND next_check_at <= ?"
            " ORDER BY next_check_at, id LIMIT ?",
            (iso(self.now()), limit),
        )
        return [generation_from_row(row) for row in rows]

    async def next_due(self, *, include_queued: bool = True) -> datetime | None:
        """When the runner should look next (queued generations left out while it is at capacity)."""
        states = "('queued', 'processing')" if include_queued else "('processing')"
        row = await self.db.fetchone(
            f"SELECT MIN(next_check_at) FROM generations WHERE state IN {states}"  # noqa: S608 (constants)
        )
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    async def in_flight(self) -> int:
        """Generations the provider has (or may be about to have) in its queue."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM generations WHERE state IN (?, ?)",
            _IN_FLIGHT,
        )
        return int(row[0]) if row else 0

    async def ids_in_state(self, state: GenerationState) -> list[int]:
        rows = await self.db.fetchall("SELECT id FROM generations WHERE state = ? ORDER BY id", (state.value,))
        return [int(row[0]) for row in rows]

    async def recent_for_owner(self, owner_id: int, since: datetime) -> list[tuple[datetime, int]]:
        """(created_at, pictures asked) of the owner's generations since `since`, oldest first,
        not counting those that failed or were never sent (quotas count what may cost credits)."""
        rows = await self.db.fetchall(
            "SELECT created_at, samples FROM generations WHERE owner_id = ? AND created_at >= ?"
            " AND kind = 'imagine' AND state != 'failed' ORDER BY created_at",
            (owner_id, iso(since)),
        )
        return [(datetime.fromisoformat(row[0]), int(row[1])) for row in rows]

    async def pictures_by_job(self, job_ids: Sequence[int]) -> dict[int, int]:
        """How many pictures each of these models has made."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        rows = await self.db.fetchall(
            f"SELECT g.job_id, COUNT(*) FROM generation_images AS i JOIN generations AS g"  # noqa: S608
            f" ON g.id = i.generation_id WHERE g.job_id IN ({marks}) GROUP BY g.job_id",
            tuple(job_ids),
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def pictures(self, generation_id: int) -> list[StoredPicture]:
        rows = await self.db.fetchall(
            "SELECT position, data, content_type, nsfw, url FROM generation_images WHERE generation_id = ?"
            " ORDER BY position",
            (generation_id,),
        )
        return [StoredPicture(int(r[0]), r[1], str(r[2]), bool(r[3]), r[4]) for r in rows]

    async def pictures_posted(self, generation_id: int, urls: Sequence[str | None]) -> None:
        """The pictures are on Discord now: keep their links, drop their bytes."""

        def update(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE generation_images SET data = NULL, url = ? WHERE generation_id = ? AND position = ?",
                [(url, generation_id, position) for position, url in enumerate(urls)],
            )
            conn.execute(
                "UPDATE generation_images SET data = NULL WHERE generation_id = ? AND position >= ?",
                (generation_id, len(urls)),
            )

        await self.db.run_transaction(update)

    async def set_reply_to(self, generation_id: int, message_id: int) -> None:
        await self.db.run_transaction(
            lambda conn: conn.execute(
                "UPDATE generations SET reply_to_message_id = ? WHERE id = ?", (message_id, generation_id)
            )
        )

    # -- the one state-change path ------------------------------------------------------------------

    async def apply(self, generation_id: int, planner: GenerationPlanner) -> GenerationChange:
        """Apply what `planner` decides for the generation: state, pictures, outbox, in ONE transaction."""
        now = iso(self.now())

        def apply(conn: sqlite3.Connection) -> GenerationChange:
            row = conn.execute("SELECT * FROM generations WHERE id = ?", (generation_id,)).fetchone()
            if row is None:
                raise GenerationNotFound(generation_id)
            before = generation_from_row(row)
            plan = planner(before)
            unknown = set(plan.updates) - _PLAN_COLUMNS
            if unknown:
                raise ValueError(f"a generation plan may not update {sorted(unknown)}")
            columns: dict[str, Any] = {"updated_at": now}
            for name, value in plan.updates.items():
                columns[name] = iso(value) if isinstance(value, datetime) else value
            if plan.new_state is not None:
                columns["state"] = plan.new_state.value
                if plan.new_state.is_terminal:
                    columns["finished_at"] = now
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(
                f"UPDATE generations SET {assignments} WHERE id = ?",  # noqa: S608 (names from _PLAN_COLUMNS)
                (*columns.values(), generation_id),
            )
            conn.executemany(
                "INSERT INTO generation_images (generation_id, position, data, content_type, nsfw)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (generation_id, position, picture.data, picture.content_type, int(picture.nsfw))
                    for position, picture in enumerate(plan.pictures)
                ],
            )
            for draft in plan.outbox:
                write_outbox(conn, before.job_id, draft, now)
            after = generation_from_row(
                conn.execute("SELECT * FROM generations WHERE id = ?", (generation_id,)).fetchone()
            )
            return GenerationChange(before, after, plan)

        return await self.db.run_transaction(apply)
