"""Keeps the bot's background tasks alive and reports how they are doing.

A long-lived task (the Discord runner, the outbox worker, the reconciler) that raises is logged
with its traceback and started again after a backoff (1 s, 2 s, 4 s ... at most 60 s; back to
1 s once it has run cleanly for a while), instead of staying dead until the process restarts.
One-shot tasks (e.g. preview timers) are not restarted, but their exceptions are logged and
counted rather than left to an "exception was never retrieved" warning.

A task that died `max_deaths` times within `death_window` seconds is unhealthy; /healthz
reports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

BACKOFF_START_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
#: A task that ran this long before dying starts its backoff from the beginning again.
STABLE_AFTER_SECONDS = 300.0
#: This many deaths within DEATH_WINDOW_SECONDS make a task unhealthy.
UNHEALTHY_DEATHS = 3
DEATH_WINDOW_SECONDS = 600.0


@dataclass
class TaskHealth:
    """What the supervisor knows about one task (or one group of one-shot tasks)."""

    name: str
    one_shot: bool = False
    state: str = "running"  # running | restarting | stopped | standby; one-shot groups: running | idle
    restarts: int = 0
    failures: int = 0
    last_error: str | None = None  # the exception's type only: /healthz is not the place for details
    last_error_at: datetime | None = None
    active: int = 0  # one-shot groups: tasks not finished yet
    deaths: deque[float] = field(default_factory=deque)  # monotonic times of recent deaths


class Supervisor:
    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff_start: float = BACKOFF_START_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        stable_after: float = STABLE_AFTER_SECONDS,
        max_deaths: int = UNHEALTHY_DEATHS,
        death_window: float = DEATH_WINDOW_SECONDS,
    ) -> None:
        self._sleep = sleep
        self._clock = clock
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.stable_after = stable_after
        self.max_deaths = max_deaths
        self.death_window = death_window
        self._health: dict[str, TaskHealth] = {}
        self._supervised: dict[str, asyncio.Task[None]] = {}
        self._one_shots: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- long-lived tasks -------------------------------------------------------------------------

    def supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `factory()` until it returns; restart it (with backoff) whenever it raises."""
        running = self._supervised.get(name)
        if running is not None and not running.done():
            raise ValueError(f"a task named {name!r} is already supervised")
        health = self._health.get(name)
        if health is None or health.one_shot:
            self._health[name] = TaskHealth(name)
        # else started again (e.g. on becoming the leader again): its recent deaths still count.
        task = asyncio.create_task(self._keep_alive(name, factory), name=name)
        self._supervised[name] = task
        return task

    async def _keep_alive(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        health = self._health[name]
        delay = self.backoff_start
        while True:
            health.state = "running"
            started = self._clock()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._clock() - started >= self.stable_after:
                    delay = self.backoff_start  # it had been fine for a while: a fresh failure
                self._record_death(health, error)
                if self._stopping:  # shutting down: nothing to restart
                    health.state = "stopped"
                    log.warning("background task %s failed while stopping", name, exc_info=error)
                    return
                health.state = "restarting"
                log.error(
                    "background task %s died (%s); restarting in %.0f s",
                    name,
                    type(error).__name__,
                    delay,
                    exc_info=error,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self.backoff_cap)
                health.restarts += 1
            else:
                health.state = "stopped"  # a deliberate end (e.g. a rejected token): not restarted
                log.info("background task %s finished", name)
                return

    # -- one-shot tasks ---------------------------------------------------------------------------

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], *, task_name: str | None = None) -> asyncio.Task[Any]:
        """Run `coro` once; an exception is logged with its traceback and counted under `name`."""
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = TaskHealth(name, one_shot=True, state="idle")
        task = asyncio.create_task(coro, name=task_name or name)
        health.active += 1
        health.state = "running"
        self._one_shots.add(task)
        task.add_done_callback(lambda done: self._one_shot_done(health, done))
        return task

    def _one_shot_done(self, health: TaskHealth, task: asyncio.Task[Any]) -> None:
        self._one_shots.discard(task)
        health.active -= 1
        if health.active == 0:
            health.state = "idle"
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so asyncio never warns about it
        if error is None:
            return
        self._record_death(health, error)
        if isinstance(error, Exception):
            log.error("background task %s (%s) failed", task.get_name(), health.name, exc_info=error)
        else:
            log.critical("background task %s (%s) failed", task.get_name(), health.name, exc_info=error)

    async def cancel(self, name: str, *, state: str = "stopped") -> None:
        """Cancel the long-lived task `name` and wait for it to end; /healthz then shows `state`.

        It is not restarted; `supervise(name, ...)` may start it again later.
        """
        task = self._supervised.get(name)
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._health[name].state = state

    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks, each named as it was supervised."""
        return list(self._supervised.values())

    # -- health and shutdown ----------------------------------------------------------------------

    def _record_death(self, health: TaskHealth, error: BaseException) -> None:
        health.failures += 1
        health.last_error = type(error).__name__
        health.last_error_at = datetime.now(UTC)
        health.deaths.append(self._clock())
        self._forget_old_deaths(health)

    def _forget_old_deaths(self, health: TaskHealth) -> None:
        horizon = self._clock() - self.death_window
        while health.deaths and health.deaths[0] < horizon:
            health.deaths.popleft()

    def is_healthy(self, name: str) -> bool:
        health = self._health[name]
        self._forget_old_deaths(health)
        return len(health.deaths) < self.max_deaths

    def health(self) -> dict[str, dict[str, Any]]:
        """Per task: healthy, state, restarts, failures, last error type and when it happened."""
        return {
            name: {
                "healthy": self.is_healthy(name),
                "state": health.state,
                "restarts": health.restarts,
                "failures": health.failures,
                "last_error": health.last_error,
                "last_error_at": health.last_error_at.isoformat() if health.last_error_at else None,
            }
            for name, health in self._health.items()
        }

    async def stop(self) -> None:
        """Cancel every task (long-lived and one-shot) and wait for them to finish."""
        self._stopping = True
        tasks = [*self._supervised.values(), *self._one_shots]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name, task in self._supervised.items():
            if task.done():
                self._health[name].state = "stopped"
