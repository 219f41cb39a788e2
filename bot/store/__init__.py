"""Store adapters: SQLite (`SqliteStore`, `SqliteGenerationStore`) over one `Database`.

They implement the domain's `JobStore` and `GenerationStore` protocols and return its records.
"""

from bot.store.database import Database, DatabaseUnavailable, MigrationError, load_migrations
from bot.store.sqlite import SqliteStore
from bot.store.sqlite_generations import SqliteGenerationStore

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "MigrationError",
    "SqliteGenerationStore",
    "SqliteStore",
    "load_migrations",
]
