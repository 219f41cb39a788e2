"""Discord misbehaving while a job runs: a deleted card, lost permissions, an outage, a 429,
and an interaction token that died. Jobs still finish and the owner still hears about it."""

from __future__ import annotations

import asyncio

from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, CHANNEL, World, embed_text, job_id_of, photos
from tests.store.helpers import pending_outbox_count


async def test_a_deleted_card_is_posted_again_and_kept_up_to_date(world: World) -> None:
    world.sim.simulator.step_seconds = 0.3
    job = await world.start_training()
    first_card = job.card_message_id
    world.fake.delete_message(CHANNEL, first_card)
    job = await world.wait_job(job.id, lambda j: j.card_message_id != first_card)
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    new_card = world.card(job)
    assert new_card.channel_id == CHANNEL and not new_card.deleted
    await world.wait_for(lambda: "Model ready" in embed_text(world.card(job)), what="new card edited to ready")
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")


async def test_losing_the_channel_mid_training_still_reaches_the_owner(world: World) -> None:
    world.sim.simulator.step_seconds = 0.2
    job = await world.start_training()
    world.fake.deny_channel(CHANNEL)
    await world.wait_state(job.id, JobState.MODEL_READY)
    dms = await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")
    assert "is ready" in dms[0]


async def test_webhooks_are_persisted_while_discord_is_down_and_the_outbox_catches_up(world: World) -> None:
    world.sim.simulator.step_seconds = 0.3
    job = await world.start_training()
    world.fake.set_unreachable(True)
    job = await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    assert await pending_outbox_count(world.app.store) > 0
    assert world.dm_texts(ALICE) == []
    events = await world.app.store.events_for_job(job.id)
    assert events[-1].status == "model_ready" and events[-1].source.value == "webhook"

    world.fake.set_unreachable(False)
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, timeout=40, what="the DM after the outage")
    await world.wait_for(lambda: "Model ready" in embed_text(world.card(job)), timeout=40, what="card caught up")
    await asyncio.sleep(0.5)
    assert len(world.dm_texts(ALICE)) == 1


async def test_discord_rate_limits_are_left_to_discord_py(world: World) -> None:
    world.fake.rate_limit_next(r"/channels/\d+/messages", retry_after=0.2, count=1)
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    limited = [r for r in world.fake.requests if r.status == 429]
    assert len(limited) == 1  # one 429, retried once by discord.py, no loop of our own
    assert world.card(job).attachments


async def test_an_expired_interaction_token_does_not_stop_the_training(world: World) -> None:
    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    submit = world.app.service.submit

    async def submit_after_token_death(job, urls, **options):  # the click's token dies while we submit
        world.fake.expire_interaction_tokens()
        return await submit(job, urls, **options)

    world.app.service.submit = submit_after_token_death  # type: ignore[method-assign]
    click = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await click.wait_callback()
    job = await world.wait_state(job_id, JobState.MODEL_READY)
    assert job.training_id
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")


async def test_the_bot_connects_once_discord_comes_back_after_an_outage_at_start_up(tmp_path) -> None:
    """Login fails while Discord is down; the retries must still connect when it returns."""
    from bot.app import Application
    from bot.discord_standin import FakeDiscord
    from bot.simulator.app import start_simulator
    from tests.e2e.harness import API_KEY, GUILD, make_settings

    fake = FakeDiscord()
    await fake.start()
    fake.add_guild(GUILD, channels={CHANNEL: "general"})
    sim = await start_simulator(step_seconds=0.05, api_key=API_KEY)
    app = Application(make_settings(tmp_path, fake, sim.url))
    try:
        fake.set_unreachable(True)
        await app.start()
        await asyncio.sleep(2.5)  # two failed logins (1 s, then 2 s backoff)
        assert app.bot.connection_status() != "connected"
        fake.set_unreachable(False)
        await fake.wait_until_connected(20)
        await fake.wait_for(lambda: app.bot.connection_status() == "connected" or None, 20, "connected")
    finally:
        await app.stop()
        await sim.close()
        await fake.close()
