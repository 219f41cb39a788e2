"""Leadership: the advisory lock on a real PostgreSQL, and the loop that runs leader-only tasks.

The PostgreSQL tests use a fresh schema each (the lock key includes the schema, so they never
contend with each other or with a bot in `public`), dropped afterwards. They skip when the server
is unreachable, and fail instead when LORABOT_REQUIRE_POSTGRES=1. LORABOT_TEST_POSTGRES_URL
points them at another server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot.leader import LeaderLoop
from bot.store.leadership import (
    AdvisoryLockLeadership,
    SingleProcessLeadership,
    lock_key,
    lock_key_halves,
)
from bot.store.pg_database import redact_url
from bot.supervisor import Supervisor

POSTGRES_URL = os.environ.get("LORABOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait (in real time) for `check()`; fail naming `what` if it never holds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- a PostgreSQL schema per test ------------------------------------------------------------------


@dataclass
class Site:
    """One test's schema, an admin connection beside it, and what the test made on them."""

    admin: Any
    schemas: list[str] = field(default_factory=list)
    made: list[AdvisoryLockLeadership] = field(default_factory=list)

    @property
    def schema(self) -> str:
        return self.schemas[0]

    def leadership(self, schema: str | None = None, **kwargs: Any) -> AdvisoryLockLeadership:
        kwargs.setdefault("timeout", 2.0)
        made = AdvisoryLockLeadership(
            kwargs.pop("dsn", POSTGRES_URL), server_settings={"search_path": schema or self.schema}, **kwargs
        )
        self.made.append(made)
        return made

    async def holder_pid(self, schema: str | None = None) -> int | None:
        """The backend pid holding the leadership lock of `schema`, as an operator finds it."""
        classid, objid = lock_key_halves(lock_key(schema or self.schema))
        pid = await self.admin.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2"
            " AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            classid,
            objid,
        )
        return int(pid) if pid is not None else None

    async def new_schema(self) -> str:
        schema = f"lead_{uuid.uuid4().hex[:12]}"
        await self.admin.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return schema


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = f"PostgreSQL is unreachable at {redact_url(POSTGRES_URL)} ({type(error).__name__})"
        if os.environ.get("LORABOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}, and LORABOT_REQUIRE_POSTGRES=1")
        pytest.skip(f"{reason}; set LORABOT_TEST_POSTGRES_URL to run the leadership tests")
    made = Site(admin)
    try:
        await made.new_schema()
        yield made
    finally:
        for leadership in made.made:
            await leadership.release()
        for schema in made.schemas:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


# -- the lock --------------------------------------------------------------------------------------


async def test_of_two_processes_on_one_schema_exactly_one_leads(site: Site) -> None:
    first, second = site.leadership(), site.leadership()
    results = await asyncio.gather(first.try_acquire(), second.try_acquire())
    assert sorted(results) == [False, True]
    leader, follower = (first, second) if results[0] else (second, first)
    assert leader.held and not follower.held
    # Trying again changes nothing: the leader keeps the lock, the follower still does not get it.
    assert await leader.try_acquire() and not await follower.try_acquire()
    assert await leader.try_acquire() and not await follower.try_acquire()
    assert await site.holder_pid() is not None


async def test_when_the_leaders_session_is_killed_the_other_takes_over_at_its_next_try(site: Site, caplog) -> None:
    first, second = site.leadership(), site.leadership()
    assert await first.try_acquire()
    assert not await second.try_acquire()
    holder = await site.holder_pid()
    assert holder is not None

    assert await site.admin.fetchval("SELECT pg_terminate_backend($1)", holder)

    await until(lambda: not first.held, "the dead connection to show in `held`")
    assert await second.try_acquire(), "the follower takes the freed lock at its next try"
    with caplog.at_level(logging.WARNING, logger="bot.store.leadership"):
        # The old leader reconnects on its next try, and finds the lock taken.
        assert not await first.try_acquire()
        assert not first.held
    assert await site.holder_pid() not in (None, holder)
    assert second.held


async def test_a_dead_connection_found_at_the_next_try_ends_the_leadership_and_reconnects(site: Site) -> None:
    leadership = site.leadership()
    assert await leadership.try_acquire()
    first_pid = await site.holder_pid()
    assert await site.admin.fetchval("SELECT pg_terminate_backend($1)", first_pid)
    # No other process wants it: the next tries reconnect and take the lock again.
    for _ in range(3):
        if await leadership.try_acquire():
            break
    assert leadership.held
    assert await site.holder_pid() not in (None, first_pid)


async def test_a_lock_that_vanished_from_a_live_session_is_noticed(site: Site, caplog) -> None:
    """Something unlocked the leader's session behind its back (a pooler in between, a stray
    pg_advisory_unlock_all): a mere "the connection answers" check would leave two leaders."""
    first, second = site.leadership(), site.leadership()
    assert await first.try_acquire()
    await first._conn.execute("SELECT pg_advisory_unlock_all()")
    assert await second.try_acquire()
    with caplog.at_level(logging.WARNING, logger="bot.store.leadership"):
        assert not await first.try_acquire()
    assert "vanished" in caplog.text
    assert not first.held and second.held


async def test_release_unlocks_so_the_other_leads_at_once(site: Site) -> None:
    first, second = site.leadership(), site.leadership()
    assert await first.try_acquire()
    await first.release()
    assert not first.held
    assert await second.try_acquire()
    await first.release()  # twice is harmless


async def test_two_bots_in_different_schemas_of_one_database_both_lead(site: Site) -> None:
    other_schema = await site.new_schema()
    here, there = site.leadership(), site.leadership(schema=other_schema)
    assert await here.try_acquire()
    assert await there.try_acquire()
    assert here.key != there.key
    assert here.key == lock_key(site.schema)
    assert there.key == lock_key(other_schema)
    # Each still excludes a second process of its own schema.
    assert not await site.leadership(schema=other_schema).try_acquire()


async def test_the_documented_sql_formula_gives_the_same_key(site: Site) -> None:
    in_sql = await site.admin.fetchval(
        "SELECT ('x' || left(encode(sha256(convert_to('lorabot.leader/' || $1::text, 'UTF8')), 'hex'), 16))"
        "::bit(64)::bigint",
        site.schema,
    )
    assert in_sql == lock_key(site.schema)
    assert lock_key("public") != lock_key("public", name="another")


async def test_a_search_path_without_an_existing_schema_leads_nowhere(site: Site, caplog) -> None:
    leadership = site.leadership(schema="no_such_schema_" + uuid.uuid4().hex[:8])
    with caplog.at_level(logging.WARNING, logger="bot.store.leadership"):
        assert not await leadership.try_acquire()
    assert "NoSchema" in caplog.text
    assert not leadership.held


async def test_the_connection_asks_the_server_to_probe_it(site: Site) -> None:
    """A leader whose machine vanished must lose the lock in seconds, not the kernel's hours."""
    leadership = site.leadership()
    assert await leadership.try_acquire()
    conn = leadership._conn
    assert await conn.fetchval("SHOW tcp_keepalives_idle") in ("10", "10s")


# -- a server that hangs ---------------------------------------------------------------------------


class Proxy:
    """A TCP relay to PostgreSQL that the test can freeze: it keeps the sockets but forwards nothing."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        for each in (writer, up_writer):
            each.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.frozen.is_set():
                await asyncio.Event().wait()  # swallow it, and everything after, forever
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_leader_whose_server_hangs_stops_leading_within_the_timeout(site: Site, caplog) -> None:
    real = urlsplit(POSTGRES_URL)
    proxy = Proxy(real.hostname or "127.0.0.1", real.port or 5432)
    port = await proxy.start()
    try:
        through_proxy = real._replace(netloc=f"{real.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}").geturl()
        leadership = site.leadership(dsn=through_proxy, timeout=0.5)
        assert await leadership.try_acquire()

        proxy.frozen.set()
        started = asyncio.get_running_loop().time()
        with caplog.at_level(logging.WARNING, logger="bot.store.leadership"):
            assert not await leadership.try_acquire()
        assert asyncio.get_running_loop().time() - started < 2.0
        assert not leadership.held
        assert "TimeoutError" in caplog.text
    finally:
        await proxy.close()
    # The hung connection was dropped: the server ends that session and frees the lock.
    await until_async(lambda: site.holder_pid(), None, "the hung leader's session to end")
    assert await site.leadership().try_acquire()


async def until_async(probe: Callable[[], Awaitable[object]], wanted: object, what: str) -> None:
    for _ in range(500):
        if await probe() == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_server_that_accepts_but_never_answers_does_not_hang_the_bot(caplog) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        leadership = AdvisoryLockLeadership(f"postgresql://u@127.0.0.1:{port}/db", timeout=0.3)
        started = asyncio.get_running_loop().time()
        with caplog.at_level(logging.WARNING, logger="bot.store.leadership"):
            assert not await leadership.try_acquire()
        assert asyncio.get_running_loop().time() - started < 2.0
        assert not leadership.held
        await leadership.release()
    finally:
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        silent.close()
        await silent.wait_closed()


# -- secrets ---------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_dsn_password_never_reaches_the_log(caplog) -> None:
    port = closed_port()
    dsns = [
        f"postgresql://lorabot:pw-in-netloc-1234@127.0.0.1:{port}/bot",
        f"postgresql://lorabot@127.0.0.1:{port}/bot?password=pw-in-query-5678",
    ]
    with caplog.at_level(logging.DEBUG, logger="bot.store.leadership"):
        for dsn in dsns:
            leadership = AdvisoryLockLeadership(dsn, timeout=1.0)
            assert not await leadership.try_acquire()
            assert not await leadership.try_acquire()
            await leadership.release()
            assert "pw-in" not in leadership.where
    assert f"127.0.0.1:{port}" in caplog.text
    assert "pw-in-netloc-1234" not in caplog.text
    assert "pw-in-query-5678" not in caplog.text


async def test_an_outage_is_warned_about_once_and_its_end_is_told(caplog) -> None:
    leadership = AdvisoryLockLeadership(f"postgresql://u@127.0.0.1:{closed_port()}/db", timeout=1.0)
    with caplog.at_level(logging.DEBUG, logger="bot.store.leadership"):
        for _ in range(3):
            assert not await leadership.try_acquire()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2


def test_key_halves_are_what_pg_locks_shows() -> None:
    assert lock_key_halves(-1) == (0xFFFF_FFFF, 0xFFFF_FFFF)
    assert lock_key_halves(0x0000_0001_0000_0002) == (1, 2)
    key = lock_key("public")
    high, low = lock_key_halves(key)
    assert ((high << 32) | low) == key & 0xFFFF_FFFF_FFFF_FFFF


async def test_sqlite_always_leads() -> None:
    leadership = SingleProcessLeadership()
    assert leadership.held
    assert await leadership.try_acquire()
    await leadership.release()
    assert await leadership.try_acquire()


# -- the loop that runs leader-only tasks -----------------------------------------------------------


class ScriptedLeadership:
    """Answers `try_acquire` from a script (the last answer repeats); an exception in it is raised."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.tries = 0
        self.releases = 0
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def try_acquire(self) -> bool:
        answer = self.answers[min(self.tries, len(self.answers) - 1)]
        self.tries += 1
        if isinstance(answer, Exception):
            raise answer
        self._held = answer
        return answer

    async def release(self) -> None:
        self.releases += 1
        self._held = False


class LeaderOnlyTask:
    """A leader-only task that runs until cancelled, counting its starts and cancellations."""

    def __init__(self) -> None:
        self.starts = 0
        self.cancellations = 0

    @property
    def running(self) -> bool:
        return self.starts > self.cancellations

    async def run(self) -> None:
        self.starts += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancellations += 1
            raise


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


async def test_the_loop_starts_the_tasks_on_becoming_leader_and_cancels_them_on_losing_it(caplog) -> None:
    supervisor = Supervisor()
    reconciler, runner = LeaderOnlyTask(), LeaderOnlyTask()
    clock = Clock()
    loop = LeaderLoop(
        ScriptedLeadership(True, True, False, False, True),
        supervisor,
        {"reconciler": reconciler.run, "generation-runner": runner.run},
        now=clock,
    )
    assert loop.health() == {"leader": False, "since": None}
    try:
        with caplog.at_level(logging.INFO, logger="bot.leader"):
            assert await loop.step()
            await until(lambda: reconciler.running and runner.running, "the leader-only tasks to start")
            became = clock.now
            assert loop.health() == {"leader": True, "since": became.isoformat()}
            assert "became the leader: starting reconciler, generation-runner" in caplog.text

            assert await loop.step()  # still the leader: nothing started twice
            await asyncio.sleep(0.01)
            assert (reconciler.starts, runner.starts) == (1, 1)
            assert loop.since == became

            assert not await loop.step()
            assert (reconciler.cancellations, runner.cancellations) == (1, 1)  # done before step returns
            assert loop.health() == {"leader": False, "since": clock.now.isoformat()}
            assert "lost the leadership: stopping reconciler, generation-runner" in caplog.text
            assert supervisor.health()["reconciler"]["state"] == "standby"

            assert not await loop.step()
            assert await loop.step()
            await until(lambda: reconciler.running and runner.running, "the tasks to start again")
            assert (reconciler.starts, runner.starts) == (2, 2)
            assert supervisor.health()["reconciler"]["state"] == "running"
    finally:
        await supervisor.stop()


async def test_a_follower_runs_nothing_and_says_since_when_it_follows() -> None:
    supervisor = Supervisor()
    task = LeaderOnlyTask()
    clock = Clock()
    loop = LeaderLoop(ScriptedLeadership(False), supervisor, {"reconciler": task.run}, now=clock)
    assert not await loop.step()
    first = clock.now
    assert not await loop.step()
    await asyncio.sleep(0.01)
    assert task.starts == 0
    assert "reconciler" not in supervisor.health()
    assert loop.health() == {"leader": False, "since": first.isoformat()}


async def test_stopping_the_loop_cancels_the_tasks_and_releases_the_lead() -> None:
    supervisor = Supervisor()
    task = LeaderOnlyTask()
    leadership = ScriptedLeadership(True)
    loop = LeaderLoop(leadership, supervisor, {"reconciler": task.run}, interval=0.01)
    running = supervisor.supervise("leader", loop.run)
    await until(lambda: task.running, "the task to start")
    await until(lambda: leadership.tries >= 3, "a few tries")
    assert task.starts == 1

    await supervisor.stop()
    assert running.done()
    assert task.cancellations == 1
    assert leadership.releases == 1
    assert not loop.leading


async def test_a_loop_that_dies_hands_back_the_lead_and_its_restart_leads_again(caplog) -> None:
    supervisor = Supervisor(backoff_start=0.01)
    task = LeaderOnlyTask()
    leadership = ScriptedLeadership(True, RuntimeError("bug"), True)
    loop = LeaderLoop(leadership, supervisor, {"reconciler": task.run}, interval=0.01)
    supervisor.supervise("leader", loop.run)
    try:
        with caplog.at_level(logging.ERROR, logger="bot.supervisor"):
            await until(lambda: task.starts == 2 and task.running, "the restarted loop to lead again")
        # The dying loop stopped its task and released before the supervisor restarted it.
        assert task.cancellations == 1
        assert leadership.releases == 1
        assert "background task leader died (RuntimeError)" in caplog.text
        assert supervisor.health()["leader"]["restarts"] == 1
    finally:
        await supervisor.stop()


async def test_with_sqlite_the_loop_leads_from_the_first_try_and_never_stops() -> None:
    supervisor = Supervisor()
    task = LeaderOnlyTask()
    loop = LeaderLoop(SingleProcessLeadership(), supervisor, {"reconciler": task.run}, interval=0.005)
    supervisor.supervise("leader", loop.run)
    try:
        await until(lambda: task.running, "the task to start")
        await asyncio.sleep(0.05)  # about ten more tries
        assert loop.leading
        assert (task.starts, task.cancellations) == (1, 0)
    finally:
        await supervisor.stop()


async def test_two_processes_on_postgresql_one_leads_and_the_other_takes_over_when_it_dies(site: Site) -> None:
    """Two bots' loops on one schema: one runs the tasks; kill its session and the other does."""
    supervisors = [Supervisor(), Supervisor()]
    tasks = [LeaderOnlyTask(), LeaderOnlyTask()]
    loops = [
        LeaderLoop(site.leadership(), supervisor, {"reconciler": task.run}, interval=0.05)
        for supervisor, task in zip(supervisors, tasks, strict=True)
    ]
    for supervisor, loop in zip(supervisors, loops, strict=True):
        supervisor.supervise("leader", loop.run)
    try:
        await until(lambda: any(loop.leading for loop in loops), "one process to lead")
        await asyncio.sleep(0.2)  # several intervals: the other never leads meanwhile
        assert [loop.leading for loop in loops].count(True) == 1
        assert [task.running for task in tasks].count(True) == 1
        leader = next(i for i, loop in enumerate(loops) if loop.leading)
        other = 1 - leader

        assert await site.admin.fetchval("SELECT pg_terminate_backend($1)", await site.holder_pid())

        await until(lambda: tasks[other].running, "the other process to take over")
        await until(lambda: not tasks[leader].running, "the old leader to stop its task")
        assert loops[other].leading
    finally:
        for supervisor in supervisors:
            await supervisor.stop()
    assert not any(task.running for task in tasks)
    assert await site.holder_pid() is None, "stopping released the lock"
