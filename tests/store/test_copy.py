"""`lorabot copy-database`: every row of every table goes from SQLite to PostgreSQL and back, with
its id; PostgreSQL's sequences continue after the copied ids; a non-empty target, a source at
another schema version or an unknown column is refused before anything is written; the CLI
prints the counts and exits non-zero when they differ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.jobs.generation_model import Picture
from bot.jobs.generations import GenerationEvent, plan_generation
from bot.jobs.model import OutboxDraft, PreviewPhoto
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.store import Database, MigrationError, load_migrations
from bot.store.copy import TABLES, CopyRefused, CopyReport, copy_database
from bot.store.open import Stores, open_stores
from tests.store.contract.conftest import (
    ALL_TABLES,
    accepted,
    new_generation,
    new_job,
    ready_job,
    submitted_job,
    webhook,
)
from tests.store.helpers import due_outbox, enqueue, job_by_training_id


async def fill(stores: Stores, clock: Any) -> None:
    """At least one row in every table, with every kind of value (NULLs, JSON, bytes, flags, big ids)."""
    jobs, generations = stores.jobs, stores.generations
    await jobs.record_listing(["OLD-MODEL"])
    model = await ready_job(jobs, owner=2**62, training_id="READY-1")
    training = await submitted_job(jobs, owner=7)
    await jobs.record_listing(["OLD-MODEL", "NEW-MODEL"], baseline_for=training.id)
    await jobs.apply_event(training.id, accepted("T-2"), plan_transition)
    await jobs.apply_event(training.id, webhook("training_started"), plan_transition, payload='{"raw": "body"}')
    await jobs.prepare_submission(
        training.id, image_urls=["https://cdn/a.png", "https://cdn/b.png"], secret_hash="f" * 64
    )
    failed = await submitted_job(jobs, owner=7)
    await jobs.apply_event(failed.id, Event(Action.FAIL, EventSource.SYSTEM, detail="boom"), plan_transition)
    preview = await new_job(jobs, owner=9, guild=None)
    await jobs.save_preview(
        preview.id, [PreviewPhoto("a.jpg", b"\x00\x01a"), PreviewPhoto("b.jpg", b"\xffb")], card_in_dms=True,
        expires_at=clock() + timedelta(minutes=9),
    )  # fmt: skip
    claimed = await jobs.claim_outbox("process-a", lease=timedelta(minutes=1), limit=1)
    await jobs.mark_delivered(claimed[0])
    await jobs.claim_outbox("process-b", lease=timedelta(minutes=1), limit=1)  # one item still leased
    await enqueue(jobs, None, OutboxDraft("dm", "dm:user:9:hello", {"user": 9, "nested": {"b": [1, None], "a": "é"}}))
    await jobs.mark_dms_closed(9)
    await jobs.set_value("commands_synced", "digest")
    made = await generations.create(new_generation(model))
    await generations.apply(made.id, lambda g: plan_generation(g, GenerationEvent("submit"), clock()))
    pictures = (Picture(b"\x89PNG", "image/png", False), Picture(b"\xff\xd8", "image/jpeg", True))
    await generations.apply(made.id, lambda g: plan_generation(g, GenerationEvent("ready", pictures=pictures), clock()))
    await generations.pictures_posted(made.id, ["https://cdn/posted.png"])
    await generations.create(new_generation(model, kind="sample", samples=1))
    settings = stores.guild_settings
    await settings.update_guild_overrides(
        2**60 + 1, {"card_channel": 2**62 + 5, "roles": [2**59, 3], "safety": False, "note": "é"}, changed_by=2**61
    )
    await settings.update_guild_overrides(2**60 + 1, {"roles": None}, changed_by=7)  # a NULL new value
    await settings.update_guild_overrides(10, {"max_active": 2}, changed_by=7)
    await settings.mark_guilds_left([10], clock() - timedelta(days=1))


async def snapshot(stores: Stores) -> dict[str, Any]:
    """Everything the stores can read back, through the domain's records (independent of the copy's code)."""
    jobs, generations = stores.jobs, stores.generations
    ids = await jobs.job_ids_in_states(list(JobState))
    everything: dict[str, Any] = {"jobs": [await jobs.get_job(i) for i in ids]}
    everything["events"] = [await jobs.events_for_job(i) for i in ids]
    everything["previews"] = [await jobs.load_preview(i) for i in ids]
    everything["generations"] = [await generations.get(i) for i in range(1, 3)]
    everything["pictures"] = [await generations.pictures(i) for i in range(1, 3)]
    everything["pending_cards"] = [await jobs.pending_card_item(i) for i in ids]
    everything["delivered"] = {
        key: await jobs.outbox_delivered(key)
        for key in ("dm:user:9:hello", *(f"card:{i}" for i in ids), *(f"dm:{i}:model_ready" for i in ids))
    }
    everything["due"] = await due_outbox(jobs)
    everything["next_due"] = await jobs.next_outbox_due()
    everything["backlog"] = await jobs.outbox_backlog()
    everything["users"] = [await jobs.dms_closed(9), await jobs.dms_closed(7)]
    everything["kv"] = await jobs.get_value("commands_synced")
    everything["models"] = [await jobs.unclaimed_models_since(n) for n in range(3)]
    everything["states"] = {e: {s: n for s, n in c.items() if n} for e, c in (await jobs.state_counts()).items()}
    settings = stores.guild_settings
    everything["guilds"] = await settings.guilds_with_settings()
    everything["overrides"] = [await settings.guild_overrides(g) for g in (2**60 + 1, 10)]
    everything["changes"] = [await settings.guild_setting_changes(g) for g in (2**60 + 1, 10)]
    return everything


@pytest.fixture
async def sqlite_source(tmp_path: Path, clock: Any) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    stores = await open_stores(url, now=clock, migrate=True)
    try:
        await fill(stores, clock)
    finally:
        await stores.close()
    yield url


async def read(url: str, clock: Any) -> dict[str, Any]:
    stores = await open_stores(url, now=clock)
    try:
        return await snapshot(stores)
    finally:
        await stores.close()


async def test_sqlite_to_postgres_and_back_keeps_every_row_and_id(
    sqlite_source: str, pg_url: str, tmp_path: Path, clock: Any
) -> None:
    original = await read(sqlite_source, clock)
    assert all(original["jobs"]) and len(original["jobs"]) == 4

    report = await copy_database(sqlite_source, pg_url)
    assert report.ok, report.table()
    assert all(source == target > 0 for _, source, target in report.counts), report.table()
    assert [name for name, _, _ in report.counts] == [table.name for table in TABLES]
    assert await read(pg_url, clock) == original

    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert (await copy_database(pg_url, back)).ok
    assert await read(back, clock) == original


async def test_after_the_copy_postgres_hands_out_new_ids_and_the_copied_rows_work(
    sqlite_source: str, pg_url: str, clock: Any
) -> None:
    await copy_database(sqlite_source, pg_url)
    stores = await open_stores(pg_url, now=clock)
    try:
        job = await new_job(stores.jobs)
        assert job.id == 5
        assert await stores.jobs.record_listing(["X"]) == 3
        model = await job_by_training_id(stores.jobs, "READY-1")
        assert model is not None
        assert (await stores.generations.create(new_generation(model))).id == 3
        await stores.guild_settings.update_guild_overrides(2**60 + 1, {"max_active": 1}, changed_by=1)
        ids = await stores.database.fetch("SELECT id FROM guild_setting_changes ORDER BY id")  # type: ignore[attr-defined]
        assert [row[0] for row in ids] == [1, 2, 3, 4, 5, 6, 7]
        left = clock() - timedelta(days=1)  # when the bot left guild 10, to the microsecond
        assert await stores.guild_settings.purge_guilds_left_before(left) == []
        assert await stores.guild_settings.purge_guilds_left_before(left + timedelta(microseconds=1)) == [10]
        await enqueue(stores.jobs, job.id, OutboxDraft("dm", "new", {}))
        events = await stores.jobs.events_for_job(model.id)
        assert len(events) == 3
        # The copied pending items can be delivered: the payload comparison holds after the copy.
        for item in await due_outbox(stores.jobs):
            await stores.jobs.mark_delivered(item)
        assert await stores.jobs.outbox_delivered("dm:user:9:hello") is True
    finally:
        await stores.close()


async def test_after_the_copy_postgres_counts_new_rows_per_state(sqlite_source: str, pg_url: str, clock: Any) -> None:
    # The copy writes the counts itself (its count triggers are off meanwhile): they must be on again.
    await copy_database(sqlite_source, pg_url)
    stores = await open_stores(pg_url, now=clock)
    try:
        before = await stores.jobs.state_counts()
        await new_job(stores.jobs)
        model = await job_by_training_id(stores.jobs, "READY-1")
        assert model is not None
        made = await stores.generations.create(new_generation(model))
        after = await stores.jobs.state_counts()
        assert after["jobs"]["preview"] == before["jobs"].get("preview", 0) + 1
        state = made.state.value
        assert after["generations"][state] == before["generations"].get(state, 0) + 1
    finally:
        await stores.close()


async def test_a_copied_sqlite_database_delivers_its_pending_items(
    sqlite_source: str, pg_url: str, tmp_path: Path, clock: Any
) -> None:
    await copy_database(sqlite_source, pg_url)
    back = f"sqlite:///{tmp_path / 'back.db'}"
    await copy_database(pg_url, back)
    stores = await open_stores(back, now=clock)
    try:
        pending = await due_outbox(stores.jobs)
        assert pending
        for item in pending:
            await stores.jobs.mark_delivered(item)  # compares the stored JSON text with the item's
        assert await due_outbox(stores.jobs) == []
    finally:
        await stores.close()


async def test_a_target_that_holds_rows_is_refused_and_left_alone(sqlite_source: str, pg_url: str, clock: Any) -> None:
    stores = await open_stores(pg_url, now=clock, migrate=True)
    try:
        await stores.jobs.set_value("mine", "keep")
        with pytest.raises(CopyRefused, match=r"already holds rows \(kv: 1\)"):
            await copy_database(sqlite_source, pg_url)
        assert await stores.jobs.get_value("mine") == "keep"
        assert await stores.jobs.get_job(1) is None
    finally:
        await stores.close()


async def test_a_source_at_another_schema_version_is_refused(tmp_path: Path, pg_url: str) -> None:
    old = await Database.open(str(tmp_path / "old.db"))
    await old.migrate(load_migrations()[:3])
    await old.close()
    with pytest.raises(CopyRefused, match=r"schema version 3.*lorabot migrate"):
        await copy_database(f"sqlite:///{tmp_path / 'old.db'}", pg_url)

    new = await Database.open(str(tmp_path / "new.db"))
    await new.migrate()
    async with new.transaction() as conn:
        await conn.execute("INSERT INTO schema_migrations VALUES (7, 'future', '2099-01-01T00:00:00+00:00')")
    await new.close()
    with pytest.raises(MigrationError, match="schema version 7, newer"):
        await copy_database(f"sqlite:///{tmp_path / 'new.db'}", pg_url)


async def test_a_column_the_copy_does_not_know_is_refused(sqlite_source: str, pg_url: str) -> None:
    db = await Database.open(sqlite_source.removeprefix("sqlite:///"))
    async with db.transaction() as conn:
        await conn.execute("ALTER TABLE jobs ADD COLUMN surprise TEXT")
    await db.close()
    with pytest.raises(CopyRefused, match="table jobs has the columns"):
        await copy_database(sqlite_source, pg_url)
    target = await open_stores(pg_url)
    try:
        for table in ALL_TABLES:
            assert await target.database.fetchval(f"SELECT COUNT(*) FROM {table}") == 0  # type: ignore[attr-defined]
    finally:
        await target.close()


def test_every_table_of_the_schema_is_copied() -> None:
    assert sorted(table.name for table in TABLES) == sorted(ALL_TABLES)


def test_the_report_says_which_counts_differ() -> None:
    same = CopyReport("a", "b", (("jobs", 3, 3), ("kv", 1, 1)), {("jobs", "x"): 3}, {("jobs", "x"): 3})
    assert same.ok and "MISMATCH" not in same.table() and "copied: a -> b" in same.table()
    short = CopyReport("a", "b", (("jobs", 3, 2), ("kv", 1, 1)), {("jobs", "x"): 3}, {("jobs", "x"): 3})
    assert not short.ok
    lines = short.table().splitlines()
    assert lines[1].split() == ["jobs", "3", "2", "MISMATCH"] and lines[2].split() == ["kv", "1", "1"]
    assert "does NOT match" in lines[-1]
    counted = CopyReport("a", "b", (("jobs", 3, 3),), {("jobs", "x"): 3}, {("jobs", "x"): 2})
    assert not counted.ok and "DIFFERENT" in counted.table()


# -- the command --------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("root_logging_restored")


async def run_cli(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


async def test_the_command_copies_prints_the_counts_and_refuses_a_second_run(
    sqlite_source: str, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("copy-database", "--from", sqlite_source, "--to", pg_url) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["table", "source", "target"]
    assert any(line.split()[:3] == ["jobs", "4", "4"] for line in out.splitlines())
    assert "copied: " in out

    assert await run_cli("copy-database", "--from", sqlite_source, "--to", pg_url) == 2
    assert "already holds rows" in capsys.readouterr().err


async def test_the_command_exits_1_when_the_counts_differ(
    sqlite_source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def lossy(source: str, target: str) -> CopyReport:
        return CopyReport(source, target, (("jobs", 4, 3),), {}, {})

    monkeypatch.setattr("bot.store.copy.copy_database", lossy)
    assert await run_cli("copy-database", "--from", sqlite_source, "--to", f"sqlite:///{tmp_path / 't.db'}") == 1
    assert "MISMATCH" in capsys.readouterr().out


async def test_the_command_never_prints_a_password(sqlite_source: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = "postgresql://lorabot:hunter2-secret@127.0.0.1:1/lorabot"
    assert await run_cli("copy-database", "--from", sqlite_source, "--to", target) == 2
    captured = capsys.readouterr()
    assert "DATABASE_URL" in captured.err and "hunter2" not in captured.err + captured.out
    assert await run_cli("copy-database", "--from", "mysql://u:hunter2-secret@h/db", "--to", target) == 2
    captured = capsys.readouterr()
    assert "must look like" in captured.err and "hunter2" not in captured.err + captured.out
