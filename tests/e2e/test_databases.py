"""The end-to-end tests run the bot on the database their pass names (LORABOT_TEST_DATABASE), each
test on its own: on PostgreSQL a fresh schema that is gone after the test."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.e2e.databases import DATABASE, database_url, e2e_database, postgres_only
from tests.e2e.harness import World
from tests.postgres import open_admin


async def test_the_bot_runs_on_the_database_this_pass_names(world: World, tmp_path: Path) -> None:
    assert world.app.stores.kind == DATABASE
    assert world.settings.database_url == database_url(tmp_path)


@postgres_only("the schema per test")
async def test_each_test_gets_a_fresh_schema_dropped_after_it(tmp_path: Path) -> None:
    admin = await open_admin()
    exists = "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)"
    try:
        async with e2e_database(tmp_path / "another test") as url:
            (schema,) = parse_qs(urlsplit(url).query)["search_path"]
            assert schema != parse_qs(urlsplit(database_url(tmp_path)).query)["search_path"][0]
            assert await admin.fetchval(exists, schema)
            assert (
                await admin.fetchval("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1", schema)
                == 0
            )
        assert not await admin.fetchval(exists, schema)
    finally:
        await admin.close()
