"""`lorabot backup`: an online copy of the SQLite database, safe while the bot runs and writes.

The copy is made with SQLite's online backup API from a connection of its own (never the bot's),
in one step: the reader sees one committed state of the database, WAL included, and in WAL mode
a reader never blocks the bot's writers. The copy is written next to the target under a temporary
name, switched to a single self-contained file (no -wal), checked with `PRAGMA quick_check`, and
only then renamed into place, so a file at the target path is always a complete backup.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

#: Jobs in these states are finished; every other state is still in progress.
_FINISHED = ("model_ready", "cancelled", "failed", "expired")


class BackupError(Exception):
    """The backup was not made; the message says why and what to do (one line)."""


class BackupFailed(BackupError):
    """The copy itself failed (SQLite, the disk); the other errors are the operator's to fix."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    source: Path
    target: Path
    schema_version: int
    jobs_by_state: dict[str, int]
    generations: int

    @property
    def jobs(self) -> int:
        return sum(self.jobs_by_state.values())

    def summary(self) -> str:
        active = sum(count for state, count in self.jobs_by_state.items() if state not in _FINISHED)
        states = ", ".join(f"{count} {state}" for state, count in sorted(self.jobs_by_state.items()))
        return (
            f"backed up {self.source} to {self.target}: {self.jobs} jobs ({active} in progress"
            f"{'; ' + states if states else ''}), {self.generations} generations, schema version "
            f"{self.schema_version}"
        )


def backup_database(source: str | Path, target: str | Path, *, force: bool = False) -> BackupResult:
    """Copy the database at `source` to `target`; refuses an existing target unless `force`."""
    src = Path(source).absolute()
    dst = Path(target).expanduser().absolute()
    if not src.is_file():
        raise BackupError(f"DATABASE_URL: there is no database at {src}; set DATABASE_URL to the bot's database")
    if dst.is_dir():
        raise BackupError(f"{dst} is a directory; give the path of the backup file, e.g. {dst / 'lorabot.db'}")
    if dst.exists():
        if dst.samefile(src):
            raise BackupError(f"{dst} is the database itself; give another path for the backup")
        if not force:
            raise BackupError(f"{dst} already exists; give another path, or add --force to replace it")
    if not dst.parent.is_dir():
        raise BackupError(f"{dst.parent} does not exist; create the directory first")

    partial = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        result = _copy(src, partial)
        os.replace(partial, dst)
    except sqlite3.Error as error:
        raise BackupFailed(f"the backup of {src} failed: {error}") from None
    except OSError as error:
        raise BackupFailed(f"cannot write the backup {dst}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    _fsync_directory(dst.parent)
    return BackupResult(src, dst, *result)


def _copy(src: Path, partial: Path) -> tuple[int, dict[str, int], int]:
    """The copy itself; returns what it holds: schema version, jobs by state, generations."""
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # a leftover of an interrupted run of this same process id
    # A connection of our own, read-only in practice (query_only), waiting out the bot's commits.
    source = sqlite3.connect(src, timeout=30, isolation_level=None)
    try:
        source.execute("PRAGMA query_only = ON")
        tables = {row[0] for row in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"jobs", "schema_migrations"} <= tables:
            raise BackupError(f"{src} is not a lorabot database (no jobs table); check DATABASE_URL")
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)  # one step: a single consistent snapshot, whatever the bot commits meanwhile
        finally:
            copy.close()
    finally:
        source.close()

    copy = sqlite3.connect(partial, isolation_level=None)
    try:
        copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
        check = [row[0] for row in copy.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise BackupFailed(f"the copy failed its check ({'; '.join(check[:3])}); nothing was written")
        version = int(copy.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])
        by_state = {state: int(n) for state, n in copy.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
        has_generations = copy.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'generations'"
        ).fetchone()
        generations = int(copy.execute("SELECT COUNT(*) FROM generations").fetchone()[0]) if has_generations else 0
    finally:
        copy.close()
    with open(partial, "rb") as handle:  # the data reaches the disk before the rename makes it the backup
        os.fsync(handle.fileno())
    return version, by_state, generations


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
