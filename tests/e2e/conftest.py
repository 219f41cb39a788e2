from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.databases import e2e_database
from tests.e2e.harness import BotProcess, World, open_world


@pytest.fixture(autouse=True)
async def test_database(tmp_path: Path) -> AsyncIterator[str]:
    """The test's database (see tests/e2e/databases.py); a process the test left running is
    killed before the database goes."""
    async with e2e_database(tmp_path) as url:
        try:
            yield url
        finally:
            await BotProcess.kill_leftovers()


@pytest.fixture
async def world(tmp_path: Path, test_database: str) -> AsyncIterator[World]:
    world, close = await open_world(tmp_path)
    try:
        yield world
    finally:
        await close()
