"""Fixtures shared by every test suite: isolated settings, a migrated SQLite file, a movable clock.

Kept small and generic on purpose; suite-specific helpers live next to their tests.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import Settings, load_settings
from bot.provider.client import ProviderClient
from bot.store import Database
from bot.store.sqlite import SqliteStore

Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    """A frozen, timezone-aware UTC clock that tests move by hand (`store.now` is injectable)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self.current += timedelta(seconds=seconds, **kwargs)
        return self.current


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every environment variable a `Settings` field could read, so the host cannot leak in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.fixture
def make_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Build validated `Settings` (no `.env` file read); keyword arguments override any field."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": "test-discord-token-0123456789abcdef",
            "sdapi_key": "test-sdapi-key-0123456789abcdef",
            "public_url": "https://bot.example.org",
            "database_url": "sqlite:///" + str(tmp_path / "bot.db"),
            **overrides,
        }
        return load_settings(env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh database file in the test's temp directory, with every migration applied."""
    database = await Database.open(str(tmp_path / "bot.db"))
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def store(db: Database, clock: Clock) -> SqliteStore:
    """The repository over `db`, its time given by `clock` (frozen until a test advances it)."""
    return SqliteStore(db, now=clock)


@pytest.fixture
async def make_provider(settings: Settings) -> AsyncIterator[Callable[[Handler], ProviderClient]]:
    """A real `ProviderClient` whose HTTP goes to `handler` (an `httpx.MockTransport`); no waits between retries."""
    clients: list[ProviderClient] = []

    async def no_sleep(_seconds: float) -> None:
        return None

    def build(handler: Handler) -> ProviderClient:
        client = ProviderClient(
            settings.sdapi_base_url,
            settings.sdapi_key.get_secret_value(),
            transport=httpx.MockTransport(handler),
            max_attempts=2,
            sleep=no_sleep,
            duplicate_window=0,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def root_logging_restored() -> Iterator[None]:
    """For tests that call `bot.cli.main`: it installs lorabot's handler on the root logger,
    writing to this test's captured stderr; take it away again, as a process exit would."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)
