"""What only tests need from the SQLite store: writing an outbox item outside a transition,
counting what is undelivered, finding a job by its training id, a generation that must exist."""

from __future__ import annotations

from bot.jobs.generation_model import Generation, GenerationNotFound
from bot.jobs.model import Job, OutboxDraft, OutboxItem
from bot.jobs.ports import GenerationStore
from bot.store.rows import job_from_row, outbox_item_from_row
from bot.store.sqlite import SqliteStore, iso, write_outbox


async def enqueue(store: SqliteStore, job_id: int | None, draft: OutboxDraft) -> None:
    """Queue a notification outside a transition, with the store's own outbox writer."""
    now = iso(store.now())
    await store.db.run_transaction(lambda conn: write_outbox(conn, job_id, draft, now))


async def due_outbox(store: SqliteStore, *, limit: int = 50) -> list[OutboxItem]:
    """Every due, undelivered item, leased or not (what a test expects the notifier to see)."""
    rows = await store.db.fetchall(
        "SELECT * FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
        (iso(store.now()), limit),
    )
    return [outbox_item_from_row(row) for row in rows]


async def pending_outbox_count(store: SqliteStore) -> int:
    row = await store.db.fetchone("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
    return int(row[0]) if row else 0


async def job_by_training_id(store: SqliteStore, training_id: str) -> Job | None:
    row = await store.db.fetchone("SELECT * FROM jobs WHERE training_id = ?", (training_id,))
    return job_from_row(row) if row else None


async def require_generation(generations: GenerationStore, generation_id: int) -> Generation:
    generation = await generations.get(generation_id)
    if generation is None:
        raise GenerationNotFound(generation_id)
    return generation
