"""/train from command to DM, against the fake Discord and the provider simulator."""

from __future__ import annotations

from datetime import timedelta

from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, CHANNEL, GUILD, World, embed_text, job_id_of, photos


async def test_train_from_command_to_dm(world: World) -> None:
    rec = await world.train(photos(6))
    callback = await rec.wait_callback()
    assert callback["type"] == 5, "the command must be deferred before any download"
    assert rec.ephemeral
    assert rec.callback_latency is not None and rec.callback_latency < 3.0

    preview = await rec.wait_original(lambda m: bool(m.components), timeout=20)
    assert "Preview" in embed_text(preview)
    assert len(preview.attachments) == 1  # the grid of crops
    job_id = job_id_of(preview)

    click = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await click.wait_callback()
    job = await world.wait_state(job_id, JobState.MODEL_READY, timeout=30)

    # The card: a normal channel message with the 512x512 crops, edited in place to model_ready.
    card = world.card(job)
    assert card.channel_id == CHANNEL
    assert len(card.attachments) == 6
    await world.wait_for(lambda: "Model ready" in embed_text(world.card(job)), what="card shows model ready")

    # The provider got exactly the card's attachment URLs, and fetched 512x512 images from them.
    training = world.sim.simulator.trainings[job.training_id]
    assert [image.url for image in training.images] == [a.url for a in card.attachments]
    assert all((image.width, image.height) == (512, 512) for image in training.images)
    assert training.request["max_train_steps"] == "12"

    # Exactly one DM, with the model id, the prompt and a link to the card.
    dms = await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")
    await world.app.notifier.deliver_due()
    dms = world.dm_texts(ALICE)
    assert len(dms) == 1, dms
    assert job.training_id in dms[0] and "photo of sks man" in dms[0]
    assert f"/{CHANNEL}/{card.id}" in dms[0]


async def test_card_edits_are_coalesced_in_bursts(world: World) -> None:
    """Eight statuses arriving within a second make far fewer than eight edits of the card."""
    world.app.notifier.edit_interval = timedelta(seconds=1.0)
    world.sim.simulator.step_seconds = 0.02
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    await world.wait_for(lambda: "Model ready" in embed_text(world.card(job)), timeout=10, what="final edit")
    edits = world.card(job).edit_count
    assert 1 <= edits <= 4, edits


async def test_commands_are_synced_only_when_their_definition_changed(tmp_path) -> None:
    from tests.e2e.harness import open_world

    world, close = await open_world(tmp_path)
    try:
        assert world.fake.sync_count(GUILD) == 1
        await world.app.stop()
        world.app = type(world.app)(world.settings)
        await world.app.start()
        # The gateway connects only after login, and login runs setup_hook (where syncing happens).
        await world.wait_for(lambda: world.app.bot.has_connected or None, what="the second connection")
        assert world.fake.sync_count(GUILD) == 1  # unchanged definition: no second sync
    finally:
        await close()
