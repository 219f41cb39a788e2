"""The PostgreSQL job store: implements the domain's `JobStore` over asyncpg, method by method
with the semantics of `bot.store.sqlite.SqliteStore`.

Several bot processes may share the database: a state change is applied by a guarded write
(`bot.store.pg_guarded`), outbox items are leased with FOR UPDATE SKIP LOCKED, and every
multi-table write is one statement (CTEs) or one transaction. Time comes from the injectable
`now` (like SQLite), not from the server's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from asyncpg import Record

from bot.jobs.model import (
    FORGOTTEN_MEMBER,
    Job,
    JobEvent,
    JobNotFound,
    OutboxItem,
    Planner,
    Preview,
    PreviewPhoto,
    TrainingIdTaken,
    TransitionPlan,
    TransitionResult,
)
from bot.jobs.states import ACTIVE_STATES, TERMINAL_STATES, Event, JobState
from bot.store.database import utcnow
from bot.store.pg_database import Connection, PostgresDatabase
from bot.store.pg_guarded import guarded_write
from bot.store.pg_outbox import draft_arrays, draft_ctes
from bot.store.pg_rows import job_event_from_record, job_from_record, outbox_item_from_record

#: Columns a transition plan may update besides `state` (never ids or owners), as in SQLite.
PLAN_COLUMNS = ("training_id", "provider_status", "last_error", "eta_text", "submitted_at", "image_urls")
#: As in the WHERE of the partial index `jobs_active_updated`, so the planner can use it.
_TERMINAL_SQL = ", ".join(
    f"'{s.value}'" for s in (JobState.MODEL_READY, JobState.CANCELLED, JobState.FAILED, JobState.EXPIRED)
)
assert {s.strip("'") for s in _TERMINAL_SQL.split(", ")} == {s.value for s in TERMINAL_STATES}
_ACTIVE = [s.value for s in sorted(ACTIVE_STATES)]

#: How many of a user's newest jobs /status and /cancel autocomplete search through.
AUTOCOMPLETE_WINDOW = 100

_SELECT_JOB = "SELECT *, md5(jobs::text) AS row_hash FROM jobs WHERE id = $1"

#: The whole state change in one statement. $1 id, $2 the row's hash as the planner saw it,
#: $3 the new state (NULL: unchanged), $4 terminal?, $5 now, $6 the names of the plan's columns,
#: $7-$12 their values, $13-$16 the event (status, source, payload, applied), $17-$20 the drafts.
_APPLY_EVENT = (  # built at import time from constants; values are parameters
    "WITH job AS (UPDATE jobs SET"  # noqa: S608
    " state = COALESCE($3, state),"
    " progressed_at = CASE WHEN $3::text IS NULL THEN progressed_at ELSE $5 END,"
    " finished_at = CASE WHEN $4 THEN $5 ELSE finished_at END,"
    " updated_at = $5,"
    + ",".join(
        f" {name} = CASE WHEN '{name}' = ANY($6::text[]) THEN ${7 + index} ELSE {name} END"
        for index, name in enumerate(PLAN_COLUMNS)
    )
    + " WHERE id = $1 AND md5(jobs::text) = $2 RETURNING *)"
    ", event AS (INSERT INTO job_events (job_id, status, source, payload, received_at, applied)"
    "   SELECT id, $13, $14, $15, $5, $16 FROM job ON CONFLICT (job_id, status) DO NOTHING RETURNING 1)"
    + draft_ctes("job", "id", 17, "$5")
    + " SELECT job.*, EXISTS (SELECT FROM event) AS recorded FROM job"
)


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; naive datetimes are refused as in SQLite (they would be read as UTC)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC)


def _plan_values(plan: TransitionPlan, now: datetime) -> tuple[list[str], list[Any]]:
    unknown = set(plan.updates) - set(PLAN_COLUMNS)
    if unknown:
        raise ValueError(f"a plan may not update {sorted(unknown)}")
    values: dict[str, Any] = dict.fromkeys(PLAN_COLUMNS)
    values.update(plan.updates)
    if "submitted_at" in plan.updates:
        # None: the plan asks for "the time of this transaction".
        values["submitted_at"] = now if plan.updates["submitted_at"] is None else utc(plan.updates["submitted_at"])
    if values["image_urls"] is not None:
        values["image_urls"] = list(values["image_urls"])
    return list(plan.updates), [values[name] for name in PLAN_COLUMNS]


class PostgresStore:
    """Repository over an open `PostgresDatabase`. `now` is injectable so tests can move time.

    `optimistic_attempts`: how many times a state change is tried without a row lock before it
    takes one (see `bot.store.pg_guarded`); 0 always locks.
    """

    def __init__(
        self, db: PostgresDatabase, *, now: Callable[[], datetime] = utcnow, optimistic_attempts: int = 2
    ) -> None:
        self.db = db
        self.now = now
        self.optimistic_attempts = optimistic_attempts

    def _now(self) -> datetime:
        return utc(self.now())

    # -- jobs ---------------------------------------------------------------------------------

    async def create_job(
        self,
        *,
        owner_id: int,
        guild_id: int | None,
        channel_id: int,
        name: str,
        params: Mapping[str, Any],
        image_count: int,
    ) -> Job:
        """A new job in `preview`: it exists before anything is sent anywhere."""
        now = self._now()
        row = await self.db.fetchrow(
            "INSERT INTO jobs (owner_id, guild_id, channel_id, name, state, params, image_count,"
            " created_at, updated_at, progressed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) RETURNING *",
            owner_id,
            guild_id,
            channel_id,
            name,
            JobState.PREVIEW.value,
            dict(params),
            image_count,
            now,
        )
        assert row is not None
        return job_from_record(row)

    async def get_job(self, job_id: int) -> Job | None:
        row = await self.db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return job_from_record(row) if row else None

    async def require_job(self, job_id: int) -> Job:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def jobs_for_owner(self, owner_id: int, *, limit: int, offset: int = 0) -> list[Job]:
        """This user's jobs, newest first (served by jobs_owner_newest)."""
        rows = await self.db.fetch(
            "SELECT * FROM jobs WHERE owner_id = $1 AND state <> 'preview' ORDER BY id DESC LIMIT $2 OFFSET $3",
            owner_id,
            limit,
            offset,
        )
        return [job_from_record(row) for row in rows]

    async def count_jobs_for_owner(self, owner_id: int) -> int:
        return int(
            await self.db.fetchval("SELECT COUNT(*) FROM jobs WHERE owner_id = $1 AND state <> 'preview'", owner_id)
        )

    async def search_owner_jobs(
        self, owner_id: int, text: str, *, limit: int = 25, window: int = AUTOCOMPLETE_WINDOW, ready: bool = False
    ) -> list[Job]:
        """Autocomplete: the owner's newest jobs whose name, id or training id contains `text`
        (case-insensitive; only ready models with a training id when `ready`), searched among the
        owner's newest `window` jobs only, so a user with thousands of jobs is still answered at once."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.db.fetch(
            "SELECT * FROM (SELECT * FROM jobs WHERE owner_id = $1 AND state <> 'preview'"
            "               ORDER BY id DESC LIMIT $2) AS recent"
            " WHERE ($3 = '%%' OR name ILIKE $3 OR id::text LIKE $3 OR training_id ILIKE $3)"
            " AND (NOT $4 OR (state = 'model_ready' AND training_id IS NOT NULL))"
            " ORDER BY id DESC LIMIT $5",
            owner_id,
            window,
            pattern,
            ready,
            limit,
        )
        return [job_from_record(row) for row in rows]

    async def count_active_jobs(self, owner_id: int) -> int:
        return int(
            await self.db.fetchval(
                "SELECT COUNT(*) FROM jobs WHERE owner_id = $1 AND state = ANY($2::text[])", owner_id, _ACTIVE
            )
        )

    async def submissions_since(
        self, since: datetime, *, owner_id: int | None = None, guild_id: int | None = None
    ) -> list[datetime]:
        """Submission times after `since` for one owner or one guild, oldest first (quotas)."""
        if (owner_id is None) == (guild_id is None):
            raise ValueError("pass exactly one of owner_id and guild_id")
        column, value = ("owner_id", owner_id) if owner_id is not None else ("guild_id", guild_id)
        rows = await self.db.fetch(
            f"SELECT submitted_at FROM jobs WHERE {column} = $1 AND submitted_at >= $2"  # noqa: S608 (a fixed name)
            " ORDER BY submitted_at",
            value,
            utc(since),
        )
        return [row[0] for row in rows]

    async def overdue_jobs(self, updated_before: datetime, *, limit: int = 100) -> list[Job]:
        """Active jobs not updated since `updated_before`, oldest update first (the reconciler's scan)."""
        rows = await self.db.fetch(
            f"SELECT * FROM jobs WHERE state NOT IN ({_TERMINAL_SQL}) AND updated_at < $1"  # noqa: S608
            " ORDER BY updated_at LIMIT $2",
            utc(updated_before),
            limit,
        )
        return [job_from_record(row) for row in rows]

    async def count_pollable_jobs(self) -> int:
        """Unfinished jobs with a training id: the ones the reconciler asks the provider about."""
        return int(
            await self.db.fetchval(
                f"SELECT COUNT(*) FROM jobs WHERE state NOT IN ({_TERMINAL_SQL}) AND training_id IS NOT NULL"  # noqa: S608
            )
        )

    async def job_ids_in_states(self, states: Sequence[JobState], *, limit: int = 1000) -> list[int]:
        rows = await self.db.fetch(
            "SELECT id FROM jobs WHERE state = ANY($1::text[]) ORDER BY id LIMIT $2", [s.value for s in states], limit
        )
        return [int(row[0]) for row in rows]

    async def guild_jobs(
        self, guild_id: int, states: Sequence[JobState], *, updated_since: datetime | None = None, limit: int = 25
    ) -> list[Job]:
        """A server's jobs in these states (updated at or after `updated_since`, if given), newest
        first (served by jobs_guild_newest)."""
        rows = await self.db.fetch(
            "SELECT * FROM jobs WHERE guild_id = $1 AND state = ANY($2::text[])"
            " AND ($3::timestamptz IS NULL OR updated_at >= $3) ORDER BY id DESC LIMIT $4",
            guild_id,
            [s.value for s in states],
            None if updated_since is None else utc(updated_since),
            limit,
        )
        return [job_from_record(row) for row in rows]

    async def set_card(self, job_id: int, channel_id: int, message_id: int) -> None:
        await self.db.execute(
            "UPDATE jobs SET card_channel_id = $2, card_message_id = $3 WHERE id = $1", job_id, channel_id, message_id
        )

    async def prepare_submission(self, job_id: int, *, image_urls: Sequence[str], secret_hash: str) -> None:
        """Persist what is about to be sent. Once image_urls is set, the provider may know the job."""
        await self.db.execute(
            "UPDATE jobs SET image_urls = $2, webhook_secret_hash = $3, updated_at = $4 WHERE id = $1",
            job_id,
            list(image_urls),
            secret_hash,
            self._now(),
        )

    async def touch(self, job_id: int, *, eta_text: str | None = None) -> None:
        """Note that the job was looked at (a poll with no news) so it is not polled again soon."""
        await self.db.execute(
            "UPDATE jobs SET updated_at = $2, eta_text = COALESCE($3, eta_text) WHERE id = $1",
            job_id,
            self._now(),
            eta_text,
        )

    # -- the one state-change path --------------------------------------------------------------

    async def apply_event(
        self, job_id: int, event: Event, planner: Planner, *, payload: str | None = None
    ) -> TransitionResult:
        """Record `event` and apply what `planner` decides, atomically: the job update, the event
        row and the outbox items are one statement, applied only to the row the planner saw."""
        now = self._now()

        async def attempt(conn: Connection, row: Record) -> TransitionResult | None:
            before = job_from_record(row)
            plan = planner(before, event)
            if not plan.write:
                return TransitionResult(before, before, plan, False)
            updated, values = _plan_values(plan, now)
            new_state = plan.new_state
            after = await conn.fetchrow(
                _APPLY_EVENT,
                job_id,
                row["row_hash"],
                new_state.value if new_state else None,
                bool(new_state and new_state.is_terminal),
                now,
                updated,
                *values,
                plan.recorded_status,
                event.source.value,
                payload,
                new_state is not None,
                *draft_arrays(plan.outbox),
            )
            if after is None:
                return None  # the row changed since it was read: plan again
            return TransitionResult(before, job_from_record(after), plan, after["recorded"])

        try:
            return await guarded_write(
                self.db,
                _SELECT_JOB,
                job_id,
                attempt,
                missing=lambda: JobNotFound(job_id),
                optimistic_attempts=self.optimistic_attempts,
            )
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name == "jobs_training_id_key":
                raise TrainingIdTaken(job_id, event.training_id) from None
            raise

    async def events_for_job(self, job_id: int) -> list[JobEvent]:
        rows = await self.db.fetch("SELECT * FROM job_events WHERE job_id = $1 ORDER BY id", job_id)
        return [job_event_from_record(row) for row in rows]

    # -- outbox -------------------------------------------------------------------------------

    async def claim_outbox(self, owner: str, *, lease: timedelta, limit: int = 50) -> list[OutboxItem]:
        """Lease the due items no other process holds to `owner` until `now + lease`, oldest first.

        Rows another process is claiming right now are skipped (SKIP LOCKED), and a row whose
        claim committed meanwhile is re-checked and left out, so no item goes to two owners.
        Delivering, failing or postponing an item ends its lease; a lease that runs out (its
        process died) makes the item claimable again. An owner may claim again what it holds: a
        process that keeps its name across restarts takes its items back at once.
        """
        now = self._now()
        rows = await self.db.fetch(
            "WITH due AS (SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1"
            "   AND (claimed_until IS NULL OR claimed_until <= $1 OR claimed_by = $3)"
            "   ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)"
            " UPDATE outbox SET claimed_by = $3, claimed_until = $4 FROM due WHERE outbox.id = due.id"
            " RETURNING outbox.*",
            now,
            limit,
            owner,
            now + lease,
        )
        return sorted((outbox_item_from_record(row) for row in rows), key=lambda i: (i.next_attempt_at, i.id))

    async def next_outbox_due(self) -> datetime | None:
        """When the next item becomes claimable (a leased item: when its lease ends)."""
        value: datetime | None = await self.db.fetchval(
            "SELECT MIN(GREATEST(next_attempt_at, claimed_until)) FROM outbox WHERE delivered_at IS NULL"
        )
        return value

    async def mark_delivered(self, item: OutboxItem) -> None:
        """Done, unless the item was re-armed (same key, new payload) while it was being sent."""
        await self.db.execute(
            "UPDATE outbox SET delivered_at = $2, last_error = NULL, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $1 AND payload = $3",
            item.id,
            self._now(),
            dict(item.payload),
        )

    async def mark_failed(self, item: OutboxItem, error: str, retry_in: timedelta | None) -> None:
        """Count a failed attempt; retry after `retry_in`, or give up (delivered with error) if None."""
        now = self._now()
        if retry_in is None:
            await self.db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, delivered_at = $3,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = $1",
                item.id,
                error[:500],
                now,
            )
        else:
            await self.db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = $1",
                item.id,
                error[:500],
                now + retry_in,
            )

    async def postpone(self, item: OutboxItem, until: datetime) -> None:
        """Move a due item later without counting an attempt (edit coalescing, Discord outage)."""
        await self.db.execute(
            "UPDATE outbox SET next_attempt_at = $2, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $1 AND delivered_at IS NULL",
            item.id,
            utc(until),
        )

    async def retry_outbox_now(self) -> int:
        """Make every pending item due now (Discord came back: no need to sit out the backoff)."""
        status = await self.db.execute(
            "UPDATE outbox SET next_attempt_at = $1 WHERE delivered_at IS NULL AND next_attempt_at > $1", self._now()
        )
        return int(status.rsplit(" ", 1)[-1])

    async def outbox_delivered(self, dedupe_key: str) -> bool | None:
        """Whether the item with this key was delivered; None when there is no such item."""
        row = await self.db.fetchrow("SELECT delivered_at FROM outbox WHERE dedupe_key = $1", dedupe_key)
        return None if row is None else row[0] is not None

    async def settle_outbox_key(self, dedupe_key: str) -> None:
        """Mark an item delivered by another message (e.g. sample pictures sent with the ready DM)."""
        await self.db.execute(
            "UPDATE outbox SET delivered_at = $2 WHERE dedupe_key = $1 AND delivered_at IS NULL",
            dedupe_key,
            self._now(),
        )

    async def pending_card_item(self, job_id: int) -> OutboxItem | None:
        """The job's undelivered card edit, due or postponed (`card:<job id>`, as the transitions key it)."""
        row = await self.db.fetchrow(
            "SELECT * FROM outbox WHERE dedupe_key = $1 AND kind = 'card' AND delivered_at IS NULL", f"card:{job_id}"
        )
        return outbox_item_from_record(row) if row else None

    # -- previews -------------------------------------------------------------------------------

    async def save_preview(
        self, job_id: int, photos: Sequence[PreviewPhoto], *, card_in_dms: bool, expires_at: datetime
    ) -> None:
        """Keep a preview's crops until it is started, dismissed or expires (any process can start it)."""
        try:
            await self.db.execute(
                "WITH preview AS (INSERT INTO previews (job_id, card_in_dms, expires_at) VALUES ($1, $2, $3)"
                "   RETURNING job_id)"
                " INSERT INTO preview_photos (job_id, position, filename, data)"
                " SELECT preview.job_id, p.position - 1, p.filename, p.data FROM preview,"
                "   unnest($4::text[], $5::bytea[]) WITH ORDINALITY AS p (filename, data, position)",
                job_id,
                card_in_dms,
                utc(expires_at),
                [photo.filename for photo in photos],
                [photo.data for photo in photos],
            )
        except asyncpg.ForeignKeyViolationError:
            raise JobNotFound(job_id) from None

    async def load_preview(self, job_id: int) -> Preview | None:
        rows = await self.db.fetch(
            "SELECT p.card_in_dms, p.expires_at, f.filename, f.data FROM previews AS p"
            " LEFT JOIN preview_photos AS f USING (job_id) WHERE p.job_id = $1 ORDER BY f.position",
            job_id,
        )
        if not rows:
            return None
        return Preview(
            job_id=job_id,
            photos=tuple(PreviewPhoto(row["filename"], row["data"]) for row in rows if row["filename"] is not None),
            card_in_dms=rows[0]["card_in_dms"],
            expires_at=rows[0]["expires_at"],
        )

    async def drop_preview(self, job_id: int) -> None:
        """Forget a preview's crops (its photos cascade)."""
        await self.db.execute("DELETE FROM previews WHERE job_id = $1", job_id)

    # -- users and key/value --------------------------------------------------------------------

    async def mark_dms_closed(self, user_id: int) -> None:
        await self.db.execute(
            "INSERT INTO users (user_id, dms_closed_at) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET dms_closed_at = excluded.dms_closed_at",
            user_id,
            self._now(),
        )

    async def dms_closed(self, user_id: int) -> bool:
        return bool(await self.db.fetchval("SELECT dms_closed_at IS NOT NULL FROM users WHERE user_id = $1", user_id))

    async def get_value(self, key: str) -> str | None:
        value = await self.db.fetchval("SELECT value FROM kv WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_value(self, key: str, value: str) -> None:
        await self.db.execute(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    async def forget_user(self, user_id: int) -> int:
        """Delete everything stored about a user, in one statement (jobs cascade to their events,
        outbox items, generations, pictures and previews), and their id in the servers' settings
        histories."""
        return int(
            await self.db.run(
                lambda conn: conn.fetchval(
                    "WITH models AS (DELETE FROM provider_models WHERE training_id IN"
                    "   (SELECT training_id FROM jobs WHERE owner_id = $1)),"
                    " deleted AS (DELETE FROM jobs WHERE owner_id = $1 RETURNING 1),"
                    " member AS (DELETE FROM users WHERE user_id = $1),"
                    " history AS (UPDATE guild_setting_changes SET changed_by = $2 WHERE changed_by = $1)"
                    " SELECT COUNT(*) FROM deleted",
                    user_id,
                    FORGOTTEN_MEMBER,
                )
            )
        )

    # -- the provider account's models (settling unconfirmed submissions) ----------------------

    async def record_listing(self, training_ids: Sequence[str], *, baseline_for: int | None = None) -> int:
        """Remember a listing of the account's models; a model keeps the first listing it was seen in.

        With `baseline_for`, the listing is that job's baseline: taken just before its submission.
        """
        return int(
            await self.db.run(
                lambda conn: conn.fetchval(
                    "WITH listing AS (INSERT INTO provider_listings (listed_at) VALUES ($1) RETURNING id),"
                    " models AS (INSERT INTO provider_models (training_id, first_listing)"
                    "   SELECT DISTINCT t.id, listing.id FROM listing, unnest($2::text[]) AS t (id)"
                    "   ON CONFLICT (training_id) DO NOTHING),"
                    " baseline AS (UPDATE jobs SET baseline_listing = listing.id FROM listing WHERE jobs.id = $3)"
                    " SELECT id FROM listing",
                    self._now(),
                    list(training_ids),
                    baseline_for,
                )
            )
        )

    async def unclaimed_models_since(self, listing: int) -> set[str]:
        """Models first seen after `listing` whose training id belongs to no job."""
        rows = await self.db.fetch(
            "SELECT training_id FROM provider_models AS m WHERE first_listing > $1"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.training_id = m.training_id)",
            listing,
        )
        return {str(row[0]) for row in rows}

    # -- counts for /metrics (bounded reads, no write) ------------------------------------------

    async def state_counts(self) -> dict[str, dict[str, int]]:
        """Jobs and generations by state, as the triggers of migration 0004 keep them: a few rows."""
        counts: dict[str, dict[str, int]] = {}
        for entity, state, rows in await self.db.fetch("SELECT entity, state, rows FROM state_counts"):
            counts.setdefault(str(entity), {})[str(state)] = int(rows)
        return counts

    async def outbox_backlog(self) -> tuple[int, float]:
        """Undelivered outbox items, and the age in seconds of the oldest (0 when there is none)."""
        row = await self.db.fetchrow("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL")
        if row is None or not row[0]:
            return 0, 0.0
        return int(row[0]), max(0.0, (self._now() - row[1]).total_seconds())
