"""SQLite rows to the domain's records (timestamps are ISO text, JSON columns are text)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from bot.jobs.generation_model import Generation, GenerationState
from bot.jobs.model import Job, JobEvent, OutboxItem
from bot.jobs.states import EventSource, JobState

Row = sqlite3.Row


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def job_from_row(row: Row) -> Job:
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
        params=json.loads(row["params"]),
        image_count=row["image_count"],
        image_urls=tuple(json.loads(row["image_urls"] or "[]")),
        webhook_secret_hash=row["webhook_secret_hash"],
        eta_text=row["eta_text"],
        last_error=row["last_error"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        progressed_at=datetime.fromisoformat(row["progressed_at"]),
        submitted_at=parse_time(row["submitted_at"]),
        finished_at=parse_time(row["finished_at"]),
        baseline_listing=row["baseline_listing"],
    )


def job_event_from_row(row: Row) -> JobEvent:
    return JobEvent(
        id=row["id"],
        job_id=row["job_id"],
        status=row["status"],
        source=EventSource(row["source"]),
        payload=row["payload"],
        received_at=datetime.fromisoformat(row["received_at"]),
        applied=bool(row["applied"]),
    )


def outbox_item_from_row(row: Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        job_id=row["job_id"],
        kind=row["kind"],
        dedupe_key=row["dedupe_key"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        next_attempt_at=datetime.fromisoformat(row["next_attempt_at"]),
    )


def generation_from_row(row: Row) -> Generation:
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
        safety_checker=bool(row["safety_checker"]),
        age_restricted=bool(row["age_restricted"]),
        request_id=row["request_id"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        reply_to_message_id=row["reply_to_message_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        submitted_at=parse_time(row["submitted_at"]),
        finished_at=parse_time(row["finished_at"]),
        next_check_at=datetime.fromisoformat(row["next_check_at"]),
    )
