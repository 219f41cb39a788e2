"""/train beyond the happy path: previews dropped or expired, bad photos, closed DMs, a channel
the bot can't post in, and webhooks that come twice or out of order."""

from __future__ import annotations

import discord
import pytest

from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, BOB, CHANNEL, World, embed_text, job_id_of, photos
from tests.images import corpus


async def test_preview_cancel_button_drops_the_job_and_sends_nothing(world: World) -> None:
    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    click = await world.click(preview, f"lorabot:preview:drop:{job_id}")
    assert (await click.wait_callback())["type"] == 7  # the preview message itself is updated
    job = await world.wait_state(job_id, JobState.EXPIRED)
    assert job.training_id is None
    assert world.sim.simulator.trainings == {}
    assert world.posted_in(CHANNEL) == []
    assert "Nothing was sent" in click.callback_data.get("content", "")


async def test_preview_expires_when_unanswered(world: World) -> None:
    rec, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    cog = world.app.bot.get_cog("Training")
    pending = cog.previews[job_id]  # type: ignore[attr-defined]
    assert pending.timer is not None
    pending.timer.cancel()
    pending.expires_at = discord.utils.utcnow()
    await cog._expire_later(pending)  # type: ignore[attr-defined]
    await world.wait_state(job_id, JobState.EXPIRED)
    original = await rec.wait_original(lambda m: "expired" in m.content)
    assert original.components == [] and original.embeds == []
    assert world.sim.simulator.trainings == {}


async def test_start_works_on_a_preview_this_process_never_held(world: World) -> None:
    """The crops are in the database: a Start that lands on another process (or after a restart,
    before the timeout) still submits."""
    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    cog = world.app.bot.get_cog("Training")
    forgotten = cog.previews.pop(job_id)  # type: ignore[attr-defined]
    forgotten.timer.cancel()
    start = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await start.wait_callback()
    job = await world.wait_job(job_id, lambda j: j.training_id is not None)
    assert len(world.sim.simulator.trainings) == 1
    assert len(job.image_urls) == 5
    assert await world.app.store.load_preview(job_id) is None  # the crops left with the preview


async def test_start_on_a_preview_that_expired_meanwhile_says_so(world: World) -> None:
    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    await world.app.service.expire_preview(job_id, "The preview timed out.")  # e.g. by another process
    late = await world.click(preview, f"lorabot:preview:start:{job_id}")
    await late.wait_callback()
    assert "no longer active" in late.callback_data.get("content", "")
    assert world.sim.simulator.trainings == {}


async def test_only_the_invoker_can_press_start(world: World) -> None:
    _, preview = await world.preview(photos(5))
    job_id = job_id_of(preview)
    intruder = await world.click(preview, f"lorabot:preview:start:{job_id}", user_id=BOB)
    await intruder.wait_callback()
    assert intruder.callback_data.get("content") == "This preview isn't yours."
    assert intruder.callback_data.get("flags", 0) & 64
    job = await world.app.store.get_job(job_id)
    assert job.state is JobState.PREVIEW


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("notes.png", corpus.text_file(), "not an image"),
        ("cut.jpg", corpus.truncated_jpeg(), "truncated"),
        ("tiny.png", corpus.one_pixel_png(), "smaller than"),
        ("small.jpg", corpus.small_jpeg(), "smaller than"),
        ("bomb.png", corpus.png_bomb(), "pixels"),
        ("drawing.svg", corpus.svg(), "SVG"),
        ("empty.jpg", b"", "empty"),
    ],
)
async def test_each_bad_photo_is_named_with_its_reason(world: World, filename: str, data: bytes, expected: str) -> None:
    images = [*photos(5), data]
    names = [f"photo{i}.jpg" for i in range(1, 6)] + [filename]
    rec = await world.train(images, filenames=names)
    assert (await rec.wait_callback())["type"] == 5
    message = await rec.wait_original(lambda m: bool(m.content), timeout=20)
    assert filename in message.content
    assert expected.lower() in message.content.lower(), message.content
    assert not message.components  # no Start button for a batch with a bad photo
    assert await world.app.store.jobs_for_owner(ALICE, limit=5) == []


async def test_too_few_photos_is_refused(world: World) -> None:
    rec = await world.train(photos(3))
    message = await rec.wait_original(lambda m: bool(m.content), timeout=20)
    assert "5" in message.content and not message.components


async def test_closed_dms_mention_the_owner_in_the_channel_and_are_remembered(world: World) -> None:
    world.fake.close_dms(ALICE)
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    mention = await world.wait_for(
        lambda: next((m for m in world.posted_in(CHANNEL) if f"<@{ALICE}>" in m.content), None),
        what="a mention in the channel",
    )
    assert "is ready" in mention.content
    assert world.dm_texts(ALICE) == []
    assert await world.app.store.dms_closed(ALICE)

    # The next outcome goes straight to the channel: no second failed DM attempt.
    seen = len(world.fake.requests)
    second = await world.start_training()
    await world.wait_state(second.id, JobState.MODEL_READY)
    await world.wait_for(
        lambda: sum(f"(job #{second.id})" in m.content for m in world.posted_in(CHANNEL)) or None,
        what="second mention",
    )
    dm_channel = world.fake.dm_channel_id(ALICE)
    dm_posts = [r for r in world.fake.requests[seen:] if r.method == "POST" and f"/channels/{dm_channel}/" in r.path]
    assert dm_posts == []


async def test_card_goes_to_dms_when_the_bot_cannot_post_in_the_channel(world: World) -> None:
    world.fake.deny_channel(CHANNEL)
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    assert job.card_channel_id == world.fake.dm_channel_id(ALICE)
    card = world.card(job)
    assert len(card.attachments) == 5
    training = world.sim.simulator.trainings[job.training_id]
    assert [image.url for image in training.images] == [a.url for a in card.attachments]


async def test_preview_warns_when_the_channel_is_not_postable(world: World) -> None:
    send_messages = 1 << 11
    rec = await world.train(photos(5))
    # Rebuild the same command with app permissions lacking Send Messages.
    payload = world.fake.slash_command_payload(
        "train",
        user_id=ALICE,
        guild_id=rec.payload["guild_id"] and int(rec.payload["guild_id"]),
        channel_id=CHANNEL,
        options={"instance_prompt": "photo of sks man", "class_prompt": "photo of a man"}
        | {f"image{i}": world.fake.upload_attachment(p, f"p{i}.jpg", "image/jpeg") for i, p in enumerate(photos(5), 1)},
        attachments=[],
        app_permissions=0xFFFFFFFF & ~send_messages,
    )
    payload["data"]["resolved"] = {
        "attachments": {
            o["value"]: world.fake.attachments[int(o["value"])].to_payload()
            for o in payload["data"]["options"]
            if o["type"] == 11
        }
    }
    restricted = await world.fake.send_interaction(payload)
    preview = await restricted.wait_original(lambda m: bool(m.components), timeout=20)
    assert "DMs instead" in embed_text(preview)


@pytest.mark.parametrize(
    "faults", [{"duplicate_webhooks": 3}, {"reorder_webhooks": "swap_pairs"}, {"reorder_webhooks": "reverse"}]
)
async def test_duplicate_and_out_of_order_webhooks_never_move_back_or_repeat(world: World, faults: dict) -> None:
    world.sim.simulator.set_faults(**faults)
    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY)
    training = await world.sim.simulator.wait_until_settled(job.training_id)
    assert len(training.deliveries) >= 8
    events = await world.app.store.events_for_job(job.id)
    statuses = [e.status for e in events]
    assert len(statuses) == len(set(statuses))  # each status recorded once
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")
    await world.app.notifier.deliver_due()
    assert len(world.dm_texts(ALICE)) == 1
    final = await world.app.store.get_job(job.id)
    assert final.state is JobState.MODEL_READY
