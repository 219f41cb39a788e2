"""Read a row, decide in Python, write: the state-change path on PostgreSQL.

The planners are Python, so a state change needs the row before its write. Holding a row lock
for that (BEGIN; SELECT ... FOR UPDATE; write; COMMIT) costs four round trips. Instead the write
is one statement (a CTE: update, event, outbox items) that applies only if the row is still
exactly as the planner saw it (`md5(row::text)` unchanged): two round trips, no transaction
held open while Python plans, and the decision can never be applied to a row it was not made on.

When another writer changed the row in between, the read and the plan are simply done again. A
row that keeps changing under us (many writers on one job) falls back to the lock, which always
makes progress: after `optimistic_attempts` misses the same write runs inside a transaction that
holds the row with FOR UPDATE, where the guard cannot fail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from asyncpg import Record

from bot.store.pg_database import Connection, PostgresDatabase

R = TypeVar("R")
#: Given the connection and the row as read (with its `row_hash`), plan and write; None when the
#: guard found the row changed (nothing was written).
Attempt = Callable[[Connection, Record], Awaitable[R | None]]


async def guarded_write(
    db: PostgresDatabase,
    select: str,
    key: int,
    attempt: Attempt[R],
    *,
    missing: Callable[[], Exception],
    optimistic_attempts: int,
) -> R:
    """Run `attempt` on the row `select` returns for `key` until its guarded write applies.

    `select` must return the row and `md5(<table>::text) AS row_hash`; `missing()` is raised
    when there is no such row.
    """

    async def optimistic(conn: Connection) -> R | None:
        row = await conn.fetchrow(select, key)
        if row is None:
            raise missing()
        return await attempt(conn, row)

    for _ in range(optimistic_attempts):
        result = await db.run(optimistic)
        if result is not None:
            return result

    async def locked(conn: Connection) -> R:
        row = await conn.fetchrow(select + " FOR UPDATE", key)
        if row is None:
            raise missing()
        result = await attempt(conn, row)
        if result is None:
            raise AssertionError("the guarded write missed a row held with FOR UPDATE")
        return result

    return await db.run(locked, transaction=True)
