"""PostgreSQL rows (asyncpg records) to the domain's records.

asyncpg already returns timezone-aware UTC datetimes for timestamptz, Python values for jsonb
(see the codec in `pg_database`) and bools for booleans, so this is mostly naming.
"""

from __future__ import annotations

from asyncpg import Record

from bot.jobs.generation_model import Generation, GenerationState
from bot.jobs.model import Job, JobEvent, OutboxItem
from bot.jobs.states import EventSource, JobState


def job_from_record(row: Record) -> Job:
    return Job(
        id=row["id"],
        owner_id=row["owner_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        card_channel_id=row["card_channel_id"],
        card_message_id=row["card_message_id"],
        name=row["name"],
        state=JobState(row["state"]),
        provider_status=row["provider_status"],
        training_id=row["training_id"],
        params=row["params"],
        image_count=row["image_count"],
        image_urls=tuple(row["image_urls"] or ()),
        webhook_secret_hash=row["webhook_secret_hash"],
        eta_text=row["eta_text"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        progressed_at=row["progressed_at"],
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
        baseline_listing=row["baseline_listing"],
    )


def job_event_from_record(row: Record) -> JobEvent:
    return JobEvent(
        id=row["id"],
        job_id=row["job_id"],
        status=row["status"],
        source=EventSource(row["source"]),
        payload=row["payload"],
        received_at=row["received_at"],
        applied=row["applied"],
    )


def outbox_item_from_record(row: Record) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        job_id=row["job_id"],
        kind=row["kind"],
        dedupe_key=row["dedupe_key"],
        payload=row["payload"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
    )


def generation_from_record(row: Record) -> Generation:
    return Generation(
        id=row["id"],
        job_id=row["job_id"],
        owner_id=row["owner_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        kind=row["kind"],
        state=GenerationState(row["state"]),
        user_prompt=row["user_prompt"],
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"],
        strength=float(row["strength"]),
        samples=row["samples"],
        seed=row["seed"],
        width=row["width"],
        height=row["height"],
        base_model_id=row["base_model_id"],
        lora_model=row["lora_model"],
        safety_checker=row["safety_checker"],
        age_restricted=row["age_restricted"],
        request_id=row["request_id"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        reply_to_message_id=row["reply_to_message_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
        next_check_at=row["next_check_at"],
    )
