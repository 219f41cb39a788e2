"""Constants of the simulator tests (their fixtures are in this folder's conftest.py)."""

from __future__ import annotations

import asyncio
import re

#: Seconds between two simulated training statuses: fast enough for a whole walk in a test.
STEP = 0.02
#: Simulator tests may resolve only these hosts (the autouse fixture `loopback_only`).
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", None}


async def served_url(proc: asyncio.subprocess.Process, output: list[str]) -> str:
    """The URL a `serve()` subprocess announces; every line read is kept in `output`."""
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line, "serve() exited early:\n" + "".join(output)
        output.append(line)
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if match:
            return match.group(1)
