"""Runs the once-per-system tasks (reconciler, stall detection, generation runner) only while this
process leads.

Every `interval` seconds the loop asks its `Leadership` to take or keep the lead. On becoming the
leader it starts the leader-only tasks under the supervisor (so they are restarted and reported
like any other); on losing the lead it cancels them before anything else. A leader that lost its
connection notices at its next try, so two processes may overlap by up to one interval (plus the
leadership's call timeout): the leader-only work must stay safe to run twice for that long.
When the loop stops (shutdown, or an error the supervisor restarts it after) it cancels the
tasks and releases the lead, so another process takes over at its next try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.jobs.ports import Leadership
from bot.supervisor import Supervisor

log = logging.getLogger(__name__)

#: Seconds between two tries: how long a dead leader's work waits for another process.
DEFAULT_INTERVAL_SECONDS = 10.0

TaskFactory = Callable[[], Awaitable[None]]


class LeaderLoop:
    def __init__(
        self,
        leadership: Leadership,
        supervisor: Supervisor,
        tasks: Mapping[str, TaskFactory],
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.leadership = leadership
        self.supervisor = supervisor
        #: The leader-only tasks by name, each as a factory the supervisor runs (and restarts).
        self.tasks = dict(tasks)
        self.interval = interval
        self._sleep = sleep
        self._now = now
        self._leading = False
        self._since: datetime | None = None

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def since(self) -> datetime | None:
        """When this process last became the leader or stopped being it (None before the first try)."""
        return self._since

    def health(self) -> dict[str, Any]:
        """For /healthz: whether this process leads, and since when."""
        return {"leader": self._leading, "since": self._since.isoformat() if self._since else None}

    async def run(self) -> None:
        """Try every `interval` seconds until cancelled; run under the supervisor."""
        try:
            while True:
                await self.step()
                await self._sleep(self.interval)
        finally:
            await self._stand_down()

    async def step(self) -> bool:
        """One try: take or keep the lead, and start or stop the leader-only tasks to match."""
        held = await self.leadership.try_acquire()
        if held and not self._leading:
            self._change(True)
            log.info("became the leader: starting %s", ", ".join(self.tasks) or "nothing")
            for name, factory in self.tasks.items():
                self.supervisor.supervise(name, factory)
        elif not held and self._leading:
            self._change(False)
            log.warning("lost the leadership: stopping %s", ", ".join(self.tasks) or "nothing")
            await self._cancel_tasks()
        elif self._since is None:
            self._since = self._now()  # a follower from the first try on
        return held

    def _change(self, leading: bool) -> None:
        self._leading = leading
        self._since = self._now()

    async def _cancel_tasks(self) -> None:
        for name in self.tasks:
            await self.supervisor.cancel(name, state="standby")

    async def _stand_down(self) -> None:
        """Stop the leader-only tasks before the lock goes, so no two leaders ever overlap here."""
        try:
            if self._leading:
                self._change(False)
                log.info("giving up the leadership: stopping %s", ", ".join(self.tasks) or "nothing")
                await self._cancel_tasks()
        finally:
            await self.leadership.release()
