"""Helpers for the load tests: a world factory, an event-loop lag probe, percentiles, memory figures.

Each test prints one-line summaries (visible with ``-s``) and records the same figures with
``record_property`` so they appear in a junit report.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import World, open_world

WorldFactory = Callable[..., Any]


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[WorldFactory]:
    """`await make_world(**settings_overrides)` opens the real Application against the fakes."""
    closers: list[Callable[[], Any]] = []

    async def build(**overrides: Any) -> World:
        world, close = await open_world(tmp_path, **overrides)
        closers.append(close)
        return world

    yield build
    for close in reversed(closers):
        await close()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LoopLagProbe:
    """Sleeps `interval` seconds in a loop and records how late each wake-up was (the loop's lag).

    While a callback holds the event loop, every other task (including this one) waits; the
    overshoot of `asyncio.sleep` is therefore the time the loop was blocked, plus scheduling noise.
    `stamps` keeps (wake-up time, lag) so a spike can be matched to what ran at that moment.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self.stamps: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            after = time.perf_counter()
            lag = max(0.0, after - before - self.interval)
            self.lags.append(lag)
            self.stamps.append((after, lag))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def max(self) -> float:
        return max(self.lags, default=0.0)

    def p(self, fraction: float) -> float:
        return percentile(self.lags, fraction)


class GcPauses:
    """Records the garbage collector's pauses (they run on whichever thread allocates; here the loop's).

    A full (generation 2) collection walks every tracked object of the process, so its pause grows
    with the heap; it is the usual suspect when the loop stalls without any slow callback.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self.spans: list[tuple[int, float, float]] = []  # (generation, perf_counter start, end)
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            ended = time.perf_counter()
            self.pauses.append((info["generation"], ended - self._started))
            self.spans.append((info["generation"], self._started, ended))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def max(self, generation: int | None = None) -> float:
        return max((d for g, d in self.pauses if generation is None or g == generation), default=0.0)

    def count(self, generation: int) -> int:
        return sum(1 for g, _ in self.pauses if g == generation)

    def within(self, start: float, end: float) -> float:
        """Seconds of collection inside [start, end] (perf_counter times)."""
        return sum(max(0.0, min(end, b) - max(start, a)) for _, a, b in self.spans)


def proc_status_kb(field: str) -> int:
    """A `kB` figure from /proc/self/status (VmRSS: resident now, VmHWM: peak resident)."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    assert match, f"{field} not in /proc/self/status"
    return int(match[1])


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def report(record_property: Callable[[str, object], None], title: str, figures: dict[str, object]) -> None:
    """One line for `-s`, one junit property per figure."""
    for name, value in figures.items():
        record_property(name, value)
    print(f"\n[load] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
