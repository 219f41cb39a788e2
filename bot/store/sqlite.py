"""The SQLite job store: implements the domain's `JobStore` (jobs, events, outbox, users, kv).

Its surface is deliberately narrow (jobs, events, outbox, users, key/value) so that a
PostgreSQL adapter is one new module with the same methods.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.jobs.model import (
    FORGOTTEN_MEMBER,
    Job,
    JobEvent,
    JobNotFound,
    OutboxDraft,
    OutboxItem,
    Planner,
    Preview,
    PreviewPhoto,
    TrainingIdTaken,
    TransitionPlan,
    TransitionResult,
)
from bot.jobs.states import ACTIVE_STATES, TERMINAL_STATES, Event, JobState
from bot.store.database import Database, utcnow
from bot.store.rows import job_event_from_row, job_from_row, outbox_item_from_row

#: Columns a transition plan may update besides `state` (never ids or owners).
_PLAN_COLUMNS = frozenset({"training_id", "provider_status", "last_error", "eta_text", "submitted_at", "image_urls"})
#: Spelled exactly as in the WHERE of the partial index `jobs_active_updated` (same words, same
#: order): SQLite uses a partial index only when the query repeats its condition verbatim.
_TERMINAL_ORDER = (JobState.MODEL_READY, JobState.CANCELLED, JobState.FAILED, JobState.EXPIRED)
assert frozenset(_TERMINAL_ORDER) == TERMINAL_STATES
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in _TERMINAL_ORDER)
_ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATES))


#: How many of a user's newest jobs /status and /cancel autocomplete search through.
AUTOCOMPLETE_WINDOW = 100


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # Always stored in UTC: timestamps are compared as text, which only works with one offset.
    return moment.astimezone(UTC).isoformat()


def write_outbox(conn: sqlite3.Connection, job_id: int | None, draft: OutboxDraft, now: str) -> None:
    """Queue an outbox item inside the caller's transaction (the one place outbox rows are written)."""
    payload = json.dumps(dict(draft.payload), sort_keys=True)
    if draft.coalesce:
        conn.execute(
            "INSERT INTO outbox (job_id, kind, dedupe_key, payload, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO UPDATE SET"
            " payload = excluded.payload, attempts = 0, last_error = NULL,"
            " next_attempt_at = CASE WHEN outbox.delivered_at IS NULL"
            "   THEN outbox.next_attempt_at ELSE excluded.next_attempt_at END,"
            " delivered_at = NULL",
            (job_id, draft.kind, draft.dedupe_key, payload, now, now),
        )
    else:
        conn.execute(
            # A repeated key is skipped (at most once); a bad row fails the whole transaction.
            "INSERT INTO outbox (job_id, kind, dedupe_key, payload, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            (job_id, draft.kind, draft.dedupe_key, payload, now, now),
        )


class SqliteStore:
    """Repository over an open `Database`. `now` is injectable so tests can move time."""

    def __init__(self, db: Database, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.now = now

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
        now = iso(self.now())
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO jobs (owner_id, guild_id, channel_id, name, state, params, image_count,"
                " created_at, updated_at, progressed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner_id,
                    guild_id,
                    channel_id,
                    name,
                    JobState.PREVIEW.value,
                    json.dumps(dict(params), sort_keys=True),
                    image_count,
                    now,
                    now,
                    now,
                ),
            )
            job_id = cursor.lastrowid
        job = await self.get_job(int(job_id or 0))
        assert job is not None
        return job

    async def get_job(self, job_id: int) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    async def require_job(self, job_id: int) -> Job:
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def jobs_for_owner(self, owner_id: int, *, limit: int, offset: int = 0) -> list[Job]:
        """This user's jobs, newest first (served by jobs_owner_newest)."""
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE owner_id = ? AND state != 'preview' ORDER BY id DESC LIMIT ? OFFSET ?",
            (owner_id, limit, offset),
        )
        return [job_from_row(row) for row in rows]

    async def count_jobs_for_owner(self, owner_id: int) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM jobs WHERE owner_id = ? AND state != 'preview'", (owner_id,))
        return int(row[0]) if row else 0

    async def search_owner_jobs(
        self, owner_id: int, text: str, *, limit: int = 25, window: int = AUTOCOMPLETE_WINDOW, ready: bool = False
    ) -> list[Job]:
        """Autocomplete: the owner's newest jobs whose name or id contains `text` (only the ready
        models, with a training id, when `ready`).

        Only the owner's newest `window` jobs are searched, so a user with thousands of jobs
        still gets an answer within Discord's 3 seconds (and ours: milliseconds).
        """
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.db.fetchall(
            "SELECT * FROM (SELECT * FROM jobs WHERE owner_id = ? AND state != 'preview'"
            "               ORDER BY id DESC LIMIT ?)"
            " WHERE (? = '%%' OR name LIKE ? ESCAPE '\\' OR CAST(id AS TEXT) LIKE ? ESCAPE '\\'"
            "      OR training_id LIKE ? ESCAPE '\\')"
            " AND (? = 0 OR (state = 'model_ready' AND training_id IS NOT NULL))"
            " ORDER BY id DESC LIMIT ?",
            (owner_id, window, pattern, pattern, pattern, pattern, int(ready), limit),
        )
        return [job_from_row(row) for row in rows]

    async def count_active_jobs(self, owner_id: int) -> int:
        row = await self.db.fetchone(
            f"SELECT COUNT(*) FROM jobs WHERE owner_id = ? AND state IN ({_ACTIVE_SQL})",  # noqa: S608
            (owner_id,),
        )
        return int(row[0]) if row else 0

    async def submissions_since(
        self, since: datetime, *, owner_id: int | None = None, guild_id: int | None = None
    ) -> list[datetime]:
        """Submission times after `since` for one owner or one guild, oldest first (quotas)."""
        if (owner_id is None) == (guild_id is None):
            raise ValueError("pass exactly one of owner_id and guild_id")
        column, value = ("owner_id", owner_id) if owner_id is not None else ("guild_id", guild_id)
        rows = await self.db.fetchall(
            f"SELECT submitted_at FROM jobs WHERE {column} = ? AND submitted_at >= ?"  # noqa: S608
            " ORDER BY submitted_at",
            (value, iso(since)),
        )
        return [datetime.fromisoformat(row[0]) for row in rows]

    async def overdue_jobs(self, updated_before: datetime, *, limit: int = 100) -> list[Job]:
        """Active jobs not updated since `updated_before` (the reconciler's scan)."""
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE state NOT IN ({_TERMINAL_SQL}) AND updated_at < ?"  # noqa: S608
            " ORDER BY updated_at LIMIT ?",
            (iso(updated_before), limit),
        )
        return [job_from_row(row) for row in rows]

    async def count_pollable_jobs(self) -> int:
        """Unfinished jobs with a training id: the ones the reconciler asks the provider about."""
        row = await self.db.fetchone(
            f"SELECT COUNT(*) FROM jobs WHERE state NOT IN ({_TERMINAL_SQL}) AND training_id IS NOT NULL"  # noqa: S608
        )
        return int(row[0]) if row else 0

    async def set_card(self, job_id: int, channel_id: int, message_id: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET card_channel_id = ?, card_message_id = ? WHERE id = ?",
                (channel_id, message_id, job_id),
            )

    async def prepare_submission(self, job_id: int, *, image_urls: Sequence[str], secret_hash: str) -> None:
        """Persist what is about to be sent. Once image_urls is set, the provider may know the job."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET image_urls = ?, webhook_secret_hash = ?, updated_at = ? WHERE id = ?",
                (json.dumps(list(image_urls)), secret_hash, iso(self.now()), job_id),
            )

    async def touch(self, job_id: int, *, eta_text: str | None = None) -> None:
        """Note that the job was looked at (a poll with no news) so it is not polled again soon."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET updated_at = ?, eta_text = COALESCE(?, eta_text) WHERE id = ?",
                (iso(self.now()), eta_text, job_id),
            )

    # -- the one state-change path --------------------------------------------------------------

    async def apply_event(
        self, job_id: int, event: Event, planner: Planner, *, payload: str | None = None
    ) -> TransitionResult:
        """Record `event` and apply what `planner` decides, in ONE transaction.

        The state, the event row and the outbox items commit together or not at all, so a
        crash can neither lose a notification nor send one for a change that did not happen.
        """
        now = iso(self.now())

        def apply(conn: sqlite3.Connection) -> TransitionResult:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            before = job_from_row(row)
            plan = planner(before, event)
            if not plan.write:
                return TransitionResult(before, before, plan, False)
            cursor = conn.execute(
                # Only a repeat of (job_id, status) is skipped; OR IGNORE would also hide CHECK failures.
                "INSERT INTO job_events (job_id, status, source, payload, received_at, applied)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, status) DO NOTHING",
                (job_id, plan.recorded_status, event.source.value, payload, now, int(plan.new_state is not None)),
            )
            recorded = cursor.rowcount == 1
            self._update_job(conn, before, plan, now)
            for draft in plan.outbox:
                write_outbox(conn, job_id, draft, now)
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return TransitionResult(before, job_from_row(row), plan, recorded)

        # The whole transaction runs in the database thread in one step: a webhook costs one
        # hand-off between threads instead of a dozen.
        try:
            return await self.db.run_transaction(apply)
        except sqlite3.IntegrityError as error:
            if "jobs.training_id" in str(error):
                raise TrainingIdTaken(job_id, event.training_id) from None
            raise

    @staticmethod
    def _update_job(conn: sqlite3.Connection, before: Job, plan: TransitionPlan, now: str) -> None:
        unknown = set(plan.updates) - _PLAN_COLUMNS
        if unknown:
            raise ValueError(f"a plan may not update {sorted(unknown)}")
        columns: dict[str, Any] = {"updated_at": now, **plan.updates}
        if "submitted_at" in columns and columns["submitted_at"] is None:
            columns["submitted_at"] = now  # the plan asks for "the time of this transaction"
        if "image_urls" in columns:
            columns["image_urls"] = json.dumps(list(columns["image_urls"]))
        if plan.new_state is not None:
            columns["state"] = plan.new_state.value
            columns["progressed_at"] = now
            if plan.new_state.is_terminal:
                columns["finished_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ?",  # noqa: S608 (names from _PLAN_COLUMNS)
            (*columns.values(), before.id),
        )

    async def events_for_job(self, job_id: int) -> list[JobEvent]:
        rows = await self.db.fetchall("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [job_event_from_row(row) for row in rows]

    # -- outbox -------------------------------------------------------------------------------

    async def claim_outbox(self, owner: str, *, lease: timedelta, limit: int = 50) -> list[OutboxItem]:
        """Lease the due items no other process holds to `owner` until `now + lease`, oldest first.

        Delivering, failing or postponing an item ends its lease; a lease that runs out (its process
        died) makes the item claimable again. An owner may claim again what it holds: a process that
        keeps its name across restarts (the only one, on SQLite) takes its items back at once.
        """
        now = self.now()

        def claim(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ("
                " SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ?"
                " AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)"
                " ORDER BY next_attempt_at, id LIMIT ?)"
                " RETURNING *",
                (owner, iso(now + lease), iso(now), iso(now), owner, limit),
            ).fetchall()
            return sorted((outbox_item_from_row(row) for row in rows), key=lambda i: (i.next_attempt_at, i.id))

        return await self.db.run_transaction(claim)

    async def next_outbox_due(self) -> datetime | None:
        """When the next item becomes claimable (a leased item: when its lease ends)."""
        row = await self.db.fetchone(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until, next_attempt_at)))"
            " FROM outbox WHERE delivered_at IS NULL"
        )
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    async def mark_delivered(self, item: OutboxItem) -> None:
        """Done, unless the item was re-armed (same key, new payload) while it was being sent."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET delivered_at = ?, last_error = NULL, claimed_by = NULL, claimed_until = NULL"
                " WHERE id = ? AND payload = ?",
                (iso(self.now()), item.id, json.dumps(dict(item.payload), sort_keys=True)),
            )

    async def mark_failed(self, item: OutboxItem, error: str, retry_in: timedelta | None) -> None:
        """Count a failed attempt; retry after `retry_in`, or give up (delivered with error) if None."""
        now = self.now()
        async with self.db.transaction() as conn:
            if retry_in is None:
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, delivered_at = ?,"
                    " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
                    (error[:500], iso(now), item.id),
                )
            else:
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                    " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
                    (error[:500], iso(now + retry_in), item.id),
                )

    async def postpone(self, item: OutboxItem, until: datetime) -> None:
        """Move a due item later without counting an attempt (edit coalescing, Discord outage)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL"
                " WHERE id = ? AND delivered_at IS NULL",
                (iso(until), item.id),
            )

    async def retry_outbox_now(self) -> int:
        """Make every pending item due now (Discord came back: no need to sit out the backoff)."""
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE delivered_at IS NULL AND next_attempt_at > ?",
                (iso(self.now()), iso(self.now())),
            )
            return cursor.rowcount

    async def outbox_delivered(self, dedupe_key: str) -> bool | None:
        """Whether the item with this key was delivered; None when there is no such item."""
        row = await self.db.fetchone("SELECT delivered_at FROM outbox WHERE dedupe_key = ?", (dedupe_key,))
        return None if row is None else row[0] is not None

    async def settle_outbox_key(self, dedupe_key: str) -> None:
        """Mark an item delivered by another message (e.g. sample pictures sent with the ready DM)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET delivered_at = ? WHERE dedupe_key = ? AND delivered_at IS NULL",
                (iso(self.now()), dedupe_key),
            )

    async def pending_card_item(self, job_id: int) -> OutboxItem | None:
        """The job's undelivered card edit, due or postponed (`card:<job id>`, as the transitions key it)."""
        row = await self.db.fetchone(
            "SELECT * FROM outbox WHERE dedupe_key = ? AND kind = 'card' AND delivered_at IS NULL",
            (f"card:{job_id}",),
        )
        return outbox_item_from_row(row) if row else None

    # -- previews -------------------------------------------------------------------------------

    async def save_preview(
        self, job_id: int, photos: Sequence[PreviewPhoto], *, card_in_dms: bool, expires_at: datetime
    ) -> None:
        """Keep a preview's crops until it is started, dismissed or expires (any process can start it)."""

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO previews (job_id, card_in_dms, expires_at) VALUES (?, ?, ?)",
                (job_id, int(card_in_dms), iso(expires_at)),
            )
            conn.executemany(
                "INSERT INTO preview_photos (job_id, position, filename, data) VALUES (?, ?, ?, ?)",
                [(job_id, position, photo.filename, photo.data) for position, photo in enumerate(photos)],
            )

        try:
            await self.db.run_transaction(save)
        except sqlite3.IntegrityError as error:
            if "FOREIGN KEY" in str(error):
                raise JobNotFound(job_id) from None
            raise

    async def load_preview(self, job_id: int) -> Preview | None:
        row = await self.db.fetchone("SELECT card_in_dms, expires_at FROM previews WHERE job_id = ?", (job_id,))
        if row is None:
            return None
        photos = await self.db.fetchall(
            "SELECT filename, data FROM preview_photos WHERE job_id = ? ORDER BY position", (job_id,)
        )
        return Preview(
            job_id=job_id,
            photos=tuple(PreviewPhoto(str(p[0]), bytes(p[1])) for p in photos),
            card_in_dms=bool(row[0]),
            expires_at=datetime.fromisoformat(row[1]),
        )

    async def drop_preview(self, job_id: int) -> None:
        """Forget a preview's crops (its photos cascade)."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM previews WHERE job_id = ?", (job_id,))

    # -- users and key/value --------------------------------------------------------------------

    async def mark_dms_closed(self, user_id: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO users (user_id, dms_closed_at) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET dms_closed_at = excluded.dms_closed_at",
                (user_id, iso(self.now())),
            )

    async def dms_closed(self, user_id: int) -> bool:
        row = await self.db.fetchone("SELECT dms_closed_at FROM users WHERE user_id = ?", (user_id,))
        return bool(row and row[0])

    async def get_value(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM kv WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_value(self, key: str, value: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def forget_user(self, user_id: int) -> int:
        """Delete everything stored about a user (jobs cascade to events and outbox), and their id in
        the servers' settings histories."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM provider_models WHERE training_id IN (SELECT training_id FROM jobs WHERE owner_id = ?)",
                (user_id,),
            )
            cursor = await conn.execute("DELETE FROM jobs WHERE owner_id = ?", (user_id,))
            deleted = cursor.rowcount
            await conn.execute("DELETE FROM users WHERE user_id = ?", (user_id,))
            # A server's settings history keeps what changed, no longer who changed it.
            await conn.execute(
                "UPDATE guild_setting_changes SET changed_by = ? WHERE changed_by = ?", (FORGOTTEN_MEMBER, user_id)
            )
        return deleted

    # -- the provider account's models (settling unconfirmed submissions) ----------------------

    async def record_listing(self, training_ids: Sequence[str], *, baseline_for: int | None = None) -> int:
        """Remember a listing of the account's models; a model keeps the first listing it was seen in.

        With `baseline_for`, the listing is that job's baseline: taken just before its submission.
        """

        def record(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("INSERT INTO provider_listings (listed_at) VALUES (?)", (iso(self.now()),))
            listing = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT INTO provider_models (training_id, first_listing) VALUES (?, ?)"
                " ON CONFLICT (training_id) DO NOTHING",
                [(training_id, listing) for training_id in training_ids],
            )
            if baseline_for is not None:
                conn.execute("UPDATE jobs SET baseline_listing = ? WHERE id = ?", (listing, baseline_for))
            return listing

        return await self.db.run_transaction(record)

    async def unclaimed_models_since(self, listing: int) -> set[str]:
        """Models first seen after `listing` whose training id belongs to no job."""
        rows = await self.db.fetchall(
            "SELECT training_id FROM provider_models AS m WHERE first_listing > ?"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.training_id = m.training_id)",
            (listing,),
        )
        return {str(row[0]) for row in rows}

    async def job_ids_in_states(self, states: Sequence[JobState], *, limit: int = 1000) -> list[int]:
        placeholders = ", ".join("?" for _ in states)
        rows = await self.db.fetchall(
            f"SELECT id FROM jobs WHERE state IN ({placeholders}) ORDER BY id LIMIT ?",  # noqa: S608
            (*[s.value for s in states], limit),
        )
        return [int(row[0]) for row in rows]

    async def guild_jobs(
        self, guild_id: int, states: Sequence[JobState], *, updated_since: datetime | None = None, limit: int = 25
    ) -> list[Job]:
        """A server's jobs in these states (updated at or after `updated_since`, if given), newest
        first (served by jobs_guild_newest)."""
        if not states:
            return []
        placeholders = ", ".join("?" for _ in states)
        since = "" if updated_since is None else " AND updated_at >= ?"
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE guild_id = ? AND state IN ({placeholders}){since}"  # noqa: S608 (marks)
            " ORDER BY id DESC LIMIT ?",
            (
                guild_id,
                *[s.value for s in states],
                *([] if updated_since is None else [iso(updated_since)]),
                limit,
            ),
        )
        return [job_from_row(row) for row in rows]

    # -- counts for /metrics (bounded reads, no write) ------------------------------------------

    async def state_counts(self) -> dict[str, dict[str, int]]:
        """Jobs and generations by state, as the triggers of migration 0004 keep them: a few rows."""
        counts: dict[str, dict[str, int]] = {}
        for entity, state, rows in await self.db.fetchall("SELECT entity, state, rows FROM state_counts"):
            counts.setdefault(str(entity), {})[str(state)] = int(rows)
        return counts

    async def outbox_backlog(self) -> tuple[int, float]:
        """Undelivered outbox items, and the age in seconds of the oldest (0 when there is none).

        Reads only the pending items, through the partial index `outbox_pending`.
        """
        row = await self.db.fetchone("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL")
        if row is None or not row[0]:
            return 0, 0.0
        oldest = datetime.fromisoformat(row[1])
        return int(row[0]), max(0.0, (self.now() - oldest).total_seconds())
