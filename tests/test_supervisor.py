"""The supervisor: restarts with backoff, health, one-shot tasks, shutdown (sleep and clock are fakes)."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings

import pytest

from bot.supervisor import Supervisor


class FakeTime:
    """A monotonic clock the backoff sleep advances, so restarts take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def supervisor_with(time: FakeTime, **kwargs: float) -> Supervisor:
    return Supervisor(sleep=time.sleep, clock=time.clock, **kwargs)  # type: ignore[arg-type]


async def until(check, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_task_that_raises_is_logged_and_restarted_with_growing_backoff(caplog) -> None:  # type: ignore[no-untyped-def]
    time = FakeTime()
    supervisor = supervisor_with(time)
    runs = 0
    resumed = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 8:
            raise LookupError(f"failure {runs}")
        resumed.set()
        await asyncio.Event().wait()  # then runs forever

    supervisor.supervise("worker", flaky)
    await asyncio.wait_for(resumed.wait(), 5)
    assert time.sleeps == [1, 2, 4, 8, 16, 32, 60, 60]  # capped at 60 s
    health = supervisor.health()["worker"]
    assert health["state"] == "running" and health["restarts"] == 8
    assert health["last_error"] == "LookupError" and health["last_error_at"] is not None
    died = [r for r in caplog.records if r.name == "bot.supervisor" and r.levelno == logging.ERROR]
    assert len(died) == 8 and died[0].exc_info is not None and died[0].exc_info[0] is LookupError
    assert "worker" in died[0].getMessage()
    await supervisor.stop()
    assert supervisor.health()["worker"]["state"] == "stopped"


async def test_the_backoff_starts_over_after_a_long_clean_run() -> None:
    time = FakeTime()
    supervisor = supervisor_with(time, stable_after=300)
    runs = 0
    done = asyncio.Event()

    async def worker() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            time.now += 301  # ran cleanly for five minutes before this failure
        if runs == 6:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError("boom")

    supervisor.supervise("worker", worker)
    await asyncio.wait_for(done.wait(), 5)
    assert time.sleeps == [1, 2, 4, 1, 2]
    await supervisor.stop()


async def test_three_deaths_in_ten_minutes_make_a_task_unhealthy() -> None:
    time = FakeTime()
    supervisor = supervisor_with(time, max_deaths=3, death_window=600)
    gate = asyncio.Event()
    runs = 0

    async def worker() -> None:
        nonlocal runs
        runs += 1
        await gate.wait()
        gate.clear()
        raise RuntimeError("boom")

    supervisor.supervise("worker", worker)
    for expected_runs in (2, 3):
        gate.set()
        await until(lambda n=expected_runs: runs == n, "a restart")  # type: ignore[misc]
        assert supervisor.health()["worker"]["healthy"] is True
    gate.set()
    await until(lambda: runs == 4, "a restart")
    assert supervisor.health()["worker"] == {
        "healthy": False,
        "state": "running",
        "restarts": 3,
        "failures": 3,
        "last_error": "RuntimeError",
        "last_error_at": supervisor.health()["worker"]["last_error_at"],
    }
    time.now += 600  # the deaths age out of the window
    assert supervisor.health()["worker"]["healthy"] is True
    await supervisor.stop()


async def test_a_task_that_returns_is_not_restarted() -> None:
    time = FakeTime()
    supervisor = supervisor_with(time)
    calls = 0

    async def deliberate_stop() -> None:  # e.g. the Discord runner after a rejected token
        nonlocal calls
        calls += 1

    task = supervisor.supervise("discord", deliberate_stop)
    await task
    assert calls == 1 and time.sleeps == []
    assert supervisor.health()["discord"] == {
        "healthy": True,
        "state": "stopped",
        "restarts": 0,
        "failures": 0,
        "last_error": None,
        "last_error_at": None,
    }


async def test_a_name_cannot_be_supervised_twice_at_once() -> None:
    supervisor = Supervisor()
    supervisor.supervise("worker", asyncio.Event().wait)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.supervise("worker", asyncio.Event().wait)  # type: ignore[arg-type]
    await supervisor.stop()


async def test_stop_cancels_running_and_restarting_tasks_and_one_shots() -> None:
    supervisor = Supervisor()  # the real sleep: the failing task sits in a 1 s backoff
    started = asyncio.Event()
    cancelled: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("forever")
            raise

    async def failing() -> None:
        raise RuntimeError("boom")

    async def timer() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("timer")
            raise

    supervisor.supervise("forever", forever)
    supervisor.supervise("failing", failing)
    supervisor.spawn("timers", timer())
    await started.wait()
    await until(lambda: supervisor.health()["failing"]["state"] == "restarting", "the backoff")
    assert sorted(task.get_name() for task in supervisor.tasks()) == ["failing", "forever"]
    await asyncio.wait_for(supervisor.stop(), 2)
    assert sorted(cancelled) == ["forever", "timer"]
    health = supervisor.health()
    assert health["forever"]["state"] == health["failing"]["state"] == "stopped"
    assert health["timers"]["state"] == "idle"


async def test_one_shot_failures_are_logged_and_counted_never_left_unretrieved(caplog) -> None:  # type: ignore[no-untyped-def]
    supervisor = Supervisor()

    async def broken() -> None:
        raise KeyError("gone")

    async def fine() -> None:
        await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tasks = [
                supervisor.spawn("preview-timers", broken(), task_name="preview-1"),
                supervisor.spawn("preview-timers", fine(), task_name="preview-2"),
                supervisor.spawn("preview-timers", broken(), task_name="preview-3"),
            ]
            assert supervisor.health()["preview-timers"]["state"] == "running"
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # done callbacks
            del tasks
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []
    health = supervisor.health()["preview-timers"]
    assert health == {
        "healthy": True,
        "state": "idle",
        "restarts": 0,
        "failures": 2,
        "last_error": "KeyError",
        "last_error_at": health["last_error_at"],
    }
    failed = [r for r in caplog.records if r.name == "bot.supervisor" and r.levelno == logging.ERROR]
    assert [r.exc_info[0] for r in failed if r.exc_info] == [KeyError, KeyError]
    assert "preview-1" in failed[0].getMessage() and "preview-timers" in failed[0].getMessage()


async def test_a_one_shot_cancelled_before_it_ran_is_not_a_failure() -> None:
    supervisor = Supervisor()

    async def timer() -> None:
        await asyncio.sleep(3600)

    task = supervisor.spawn("preview-timers", timer())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert supervisor.health()["preview-timers"]["failures"] == 0
    assert supervisor.health()["preview-timers"]["state"] == "idle"


async def test_cancel_stops_a_task_for_good_and_shows_the_given_state() -> None:
    supervisor = Supervisor()
    runs = 0

    async def reconciler() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(3600)

    task = supervisor.supervise("reconciler", reconciler)
    await until(lambda: runs == 1, "the task to start")
    await supervisor.cancel("reconciler", state="standby")
    assert task.cancelled()
    await asyncio.sleep(0)
    assert runs == 1  # not restarted
    assert supervisor.health()["reconciler"]["state"] == "standby"
    assert supervisor.health()["reconciler"]["failures"] == 0
    await supervisor.cancel("never-supervised")  # nothing to do


async def test_a_task_started_again_keeps_its_recent_deaths() -> None:
    """A leader-only task that died twice, stood by, and died once more after restarting is unhealthy."""
    time = FakeTime()
    supervisor = supervisor_with(time)

    async def broken() -> None:
        raise RuntimeError("boom")

    supervisor.supervise("reconciler", broken)
    await until(lambda: supervisor.health()["reconciler"]["failures"] == 2, "two deaths")
    await supervisor.cancel("reconciler", state="standby")
    assert supervisor.is_healthy("reconciler")

    supervisor.supervise("reconciler", broken)
    await until(lambda: supervisor.health()["reconciler"]["failures"] >= 3, "a third death")
    assert not supervisor.is_healthy("reconciler")
    await supervisor.stop()
