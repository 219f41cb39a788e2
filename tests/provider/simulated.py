"""Constants of the simulator tests (their fixtures are in this folder's conftest.py)."""

from __future__ import annotations

#: Seconds between two simulated training statuses: fast enough for a whole walk in a test.
STEP = 0.02
#: Simulator tests may resolve only these hosts (the autouse fixture `loopback_only`).
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", None}
