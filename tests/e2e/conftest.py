from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import World, open_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world, close = await open_world(tmp_path)
    try:
        yield world
    finally:
        await close()
