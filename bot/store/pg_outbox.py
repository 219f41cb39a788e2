"""Outbox SQL shared by the PostgreSQL stores: the one place outbox rows are written.

Semantics as in SQLite (`bot.store.sqlite.write_outbox`): a repeated key is skipped (at most
once), except a coalesced item (a card refresh), which is re-armed with the newest payload.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from bot.jobs.model import OutboxDraft

_COLUMNS = "INSERT INTO outbox (job_id, kind, dedupe_key, payload, created_at, next_attempt_at)"
_KEEP_FIRST = " ON CONFLICT (dedupe_key) DO NOTHING"
_REARM = (
    " ON CONFLICT (dedupe_key) DO UPDATE SET payload = excluded.payload, attempts = 0, last_error = NULL,"
    " next_attempt_at = CASE WHEN outbox.delivered_at IS NULL"
    "   THEN outbox.next_attempt_at ELSE excluded.next_attempt_at END,"
    " delivered_at = NULL"
)


def draft_ctes(source: str, job_id: str, first: int, now: str) -> str:
    """CTEs (to follow another CTE named `source`) writing the drafts passed as four arrays from
    parameter `$first` on (kinds, keys, JSON payloads as text, coalesce flags), for each row of
    `source`, with the job id taken from its column `job_id`. Nothing is written if `source` is empty."""
    kinds, keys, payloads, merge = (f"${first + i}" for i in range(4))
    return (  # built at import time from constants; values are parameters
        f", drafts AS (SELECT {source}.{job_id} AS job_id, d.kind, d.dedupe_key, d.payload::jsonb AS payload, d.merge"  # noqa: S608
        f"   FROM {source}, unnest({kinds}::text[], {keys}::text[], {payloads}::text[], {merge}::bool[])"
        "   AS d (kind, dedupe_key, payload, merge))"
        f", kept AS ({_COLUMNS} SELECT job_id, kind, dedupe_key, payload, {now}, {now} FROM drafts"
        f"   WHERE NOT merge{_KEEP_FIRST})"
        f", rearmed AS ({_COLUMNS} SELECT job_id, kind, dedupe_key, payload, {now}, {now} FROM drafts"
        f"   WHERE merge{_REARM})"
    )


def draft_arrays(drafts: Sequence[OutboxDraft]) -> tuple[list[str], list[str], list[str], list[bool]]:
    """The four arrays `draft_ctes` reads."""
    return (
        [d.kind for d in drafts],
        [d.dedupe_key for d in drafts],
        [json.dumps(dict(d.payload), sort_keys=True) for d in drafts],
        [d.coalesce for d in drafts],
    )
