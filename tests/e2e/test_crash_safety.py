"""SIGKILL at the awkward moments, then a restart: no job lost, none submitted twice, no DM
repeated or lost, and old buttons either work or say clearly that they no longer do."""

from __future__ import annotations

import pytest

from bot.jobs.states import JobState
from tests.e2e.databases import wait_stored_job
from tests.e2e.harness import ALICE, BotProcess, World, job_id_of, train_and_start, train_payload
from tests.e2e.test_process import fakes, started  # noqa: F401 (fixture)
from tests.store.helpers import pending_outbox_count


def restart_of(bot: BotProcess, tmp_path, fake, sim) -> BotProcess:
    again = BotProcess(tmp_path, fake, sim.url, **{k: v for k, v in bot.env.items() if k.isupper()})
    again.port = bot.port
    return again


async def test_sigkill_while_the_submission_is_in_flight(tmp_path, fakes) -> None:  # noqa: F811
    fake, sim = fakes
    sim.simulator.set_faults(timeout_submission=1, hold_seconds=60)
    sim.simulator.step_seconds = 1.5
    bot = BotProcess(tmp_path, fake, sim.url, SDAPI_SUBMIT_TIMEOUT_SECONDS="60")
    await started(bot, fake)
    job_id = await train_and_start(fake)
    # The provider has the training; the bot is still waiting for its answer.
    await fake.wait_for(lambda: sim.simulator.trainings or None, 20, "the training to reach the provider")
    await wait_stored_job(tmp_path, job_id, lambda r: bool(r.image_urls))
    await bot.kill()

    again = restart_of(bot, tmp_path, fake, sim)
    await started(again, fake)
    try:
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.state is JobState.MODEL_READY, timeout=40)
        assert len(sim.simulator.trainings) == 1, "a training must never be submitted twice"
        assert row.training_id == next(iter(sim.simulator.trainings))
        ready = await fake.wait_for(
            lambda: [m for m in fake.dms_to(ALICE) if "is ready" in m.content] or None, 30, "the ready DM"
        )
        assert len(ready) == 1
    finally:
        assert await again.stop() == 0, again.log


async def test_a_preview_open_when_the_process_is_killed_still_starts_after_the_restart(tmp_path, fakes) -> None:  # noqa: F811
    """The preview's crops are in the database, not in the dead process's memory."""
    fake, sim = fakes
    bot = BotProcess(tmp_path, fake, sim.url)
    await started(bot, fake)
    rec = await fake.send_interaction(train_payload(fake))
    preview = await rec.wait_original(lambda m: bool(m.components), timeout=30)
    job_id = job_id_of(preview)
    await bot.kill()

    again = restart_of(bot, tmp_path, fake, sim)
    await started(again, fake)
    try:
        click = await fake.send_interaction(
            fake.component_payload(custom_id=f"lorabot:preview:start:{job_id}", message=preview, user_id=ALICE)
        )
        await click.wait_callback()
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.training_id is not None)
        assert len(row.image_urls) == 5
        assert len(sim.simulator.trainings) == 1
    finally:
        assert await again.stop() == 0


async def test_a_dm_interrupted_before_it_was_marked_sent_is_not_repeated(world: World) -> None:
    """The crash window of the outbox: Discord accepted the DM, the process died before
    recording it. Redelivery carries the same nonce, so Discord returns the first message."""
    store = world.app.store
    real_mark = store.mark_delivered
    crashed: list[str] = []

    async def die_before_marking(item):
        if item.kind == "dm" and not crashed:
            crashed.append(item.dedupe_key)
            raise SystemExit("simulated crash")  # what SIGKILL would do at this point
        await real_mark(item)

    store.mark_delivered = die_before_marking
    for task in world.app.supervisor.tasks():  # deliver by hand below, as the dying and the restarted process would
        if task.get_name() == "notifier":
            task.cancel()
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    notifier = world.app.notifier
    with pytest.raises(SystemExit):
        while not crashed:
            await notifier.deliver_due()
    assert len(world.dm_texts(ALICE)) == 1
    await notifier.deliver_due()  # the restarted process delivers the item again
    assert await pending_outbox_count(store) == 0
    assert len(world.dm_texts(ALICE)) == 1
    dm_posts = [r for r in world.fake.requests if r.method == "POST" and r.json and r.json.get("nonce")]
    assert len({r.json["nonce"] for r in dm_posts if "is ready" in (r.json.get("content") or "")}) == 1
