"""How cards and DMs look under `lorabot run --simulate`: every one says the training is simulated."""

from __future__ import annotations

import pytest

from bot.jobs.model import Job
from bot.jobs.states import JobState
from bot.render import SIMULATED_NOTE, job_card, outcome_message
from bot.store.sqlite import SqliteStore

OUTCOMES = [JobState.MODEL_READY, JobState.FAILED, JobState.CANCELLED, JobState.UNCERTAIN, JobState.TRAINING_STARTED]


async def a_job(store: SqliteStore) -> Job:
    job = await store.create_job(
        owner_id=1,
        guild_id=2,
        channel_id=3,
        name="portrait",
        params={"instance_prompt": "photo of sks man"},
        image_count=5,
    )
    await store.set_card(job.id, 3, 4)
    return await store.require_job(job.id)


async def test_a_simulated_card_has_a_simulated_field_and_a_real_one_none(store: SqliteStore) -> None:
    job = await a_job(store)
    simulated = job_card(job, [], simulated=True).to_dict()
    fields = {field["name"]: field["value"] for field in simulated.get("fields", [])}
    assert fields["Simulated"] == SIMULATED_NOTE
    assert "nothing is charged" in SIMULATED_NOTE
    real = job_card(job, []).to_dict()
    assert "Simulated" not in {field["name"] for field in real.get("fields", [])}
    assert "simulat" not in str(real).lower()


@pytest.mark.parametrize("state", OUTCOMES)
async def test_every_simulated_dm_says_so_and_a_real_one_does_not(store: SqliteStore, state: JobState) -> None:
    job = await a_job(store)
    assert SIMULATED_NOTE in outcome_message(job, state, simulated=True)
    assert "simulat" not in outcome_message(job, state).lower()
