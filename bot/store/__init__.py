"""Store adapters: SQLite (`SqliteStore`, `SqliteGenerationStore`) over one `Database`, and
PostgreSQL (`bot.store.postgres`, `bot.store.postgres_generations`) over one `PostgresDatabase`.

They implement the domain's `JobStore` and `GenerationStore` protocols and return its records;
`bot.store.open.open_stores` opens the pair DATABASE_URL names. The PostgreSQL modules are not
imported here, so SQLite-only code never loads asyncpg.
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
