"""SQLite persistence: the connection owner (`Database`) and the repository (`Store`)."""

from bot.store.database import Database, DatabaseUnavailable, MigrationError, load_migrations
from bot.store.models import Job, JobEvent, OutboxDraft, OutboxItem, TransitionPlan, TransitionResult
from bot.store.repository import JobNotFound, Store

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "Job",
    "JobEvent",
    "JobNotFound",
    "MigrationError",
    "OutboxDraft",
    "OutboxItem",
    "Store",
    "TransitionPlan",
    "TransitionResult",
    "load_migrations",
]
