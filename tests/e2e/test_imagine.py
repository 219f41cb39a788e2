"""/imagine end to end: the bot's real wiring, a fake Discord on loopback, the simulator over HTTP.

A member trains, then makes pictures with the model: by command, with Generate on the ready DM,
and with Again under a result. The pictures are re-hosted on Discord, so they outlive the
provider's temporary links."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.discord_standin import FakeMessage
from bot.jobs.model import Job
from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, BOB, CHANNEL, GUILD, MANAGER, World, open_world
from tests.store.helpers import pending_outbox_count

NSFW_CHANNEL = 645027906669510999


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world, close = await open_world(tmp_path, imagine_cooldown_seconds=0)
    try:
        yield world
    finally:
        await close()


async def trained(world: World, user_id: int = ALICE, **options: Any) -> Job:
    job = await world.start_training(user_id, **options)
    return await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)


def results(world: World, channel_id: int = CHANNEL) -> list[FakeMessage]:
    """The bot's result messages (pictures, or why there are none) in a channel."""
    return [m for m in world.posted_in(channel_id) if "· seed" in (m.content or "")]


async def wait_results(world: World, count: int, channel_id: int = CHANNEL) -> list[FakeMessage]:
    return await world.wait_for(
        lambda: (found := results(world, channel_id)) and len(found) >= count and found, what=f"{count} result(s)"
    )


def text2img_requests(world: World) -> list[dict[str, Any]]:
    return [g.request for g in world.sim.simulator.generations_v6.values()]


async def imagine(world: World, user_id: int = ALICE, channel_id: int = CHANNEL, **options: Any):
    rec = await world.command("imagine", user_id, options={"prompt": "on a beach at sunset", **options},
                              channel_id=channel_id)  # fmt: skip
    await rec.wait_callback()
    return rec


async def reply(rec) -> str:
    return (await rec.wait_original(lambda m: bool(m.content) and not m.loading, timeout=20)).content


def buttons(message: FakeMessage) -> list[str]:
    return [c.get("custom_id", "") for row in message.components for c in row.get("components", [])]


async def test_imagine_posts_discord_hosted_pictures_that_outlive_the_providers_links(world: World) -> None:
    job = await trained(world)
    world.sim.simulator.set_faults(image_ttl_seconds=0.5, t2i_processing_steps=2, t2i_eta=0.1)
    rec = await imagine(world, count=2, strength=0.6, seed=1234)
    assert rec.ephemeral
    (result,) = await wait_results(world, 1)

    assert len(result.attachments) == 2
    assert "on a beach at sunset" in result.content and "seed 1234" in result.content and "0.6" in result.content
    assert f"<@{ALICE}>" in result.content
    (sent,) = text2img_requests(world)
    assert sent["lora_model"] == job.training_id
    assert sent["model_id"] == world.settings.sdapi_base_model_sdxl
    assert str(sent["samples"]) == "2" and str(sent["width"]) == "1024"
    assert sent["prompt"].startswith("photo of sks man") and "on a beach at sunset" in sent["prompt"]
    assert sent["seed"] == 1234 and sent["safety_checker"] == "yes"

    await asyncio.sleep(1.0)  # the provider's links are gone now...
    generation = next(iter(world.sim.simulator.generations_v6.values()))
    assert generation.expired
    async with httpx.AsyncClient() as client:
        for attachment in result.attachments:  # ...but the pictures on Discord still load
            response = await client.get(attachment.url)
            assert response.status_code == 200
            assert Image.open(io.BytesIO(response.content)).size == (1024, 1024)
    final = await rec.wait_original(lambda m: "posted" in m.content, timeout=20)  # the note follows the work
    assert final.content.startswith("Done")
    assert any(b.startswith("lorabot:imagine:again:") for b in buttons(result))


async def test_again_makes_more_with_the_same_settings_and_a_new_seed(world: World) -> None:
    await trained(world)
    await imagine(world, count=1, strength=0.5)
    (first,) = await wait_results(world, 1)
    (again,) = [b for b in buttons(first) if b.startswith("lorabot:imagine:again:")]
    click = await world.click(first, again, ALICE)
    await click.wait_callback()
    second = (await wait_results(world, 2))[1]
    one, two = text2img_requests(world)
    assert one["prompt"] == two["prompt"] and one["lora_strength"] == two["lora_strength"]
    assert one["seed"] != two["seed"]
    assert len(second.attachments) == 1
    # Someone else can't spend the owner's quota.
    stranger = await world.click(first, again, BOB)
    assert "Only the member who made" in await reply(stranger)
    assert len(text2img_requests(world)) == 2


async def test_generate_on_the_ready_dm_asks_for_a_prompt_and_delivers(world: World) -> None:
    job = await trained(world)
    dm = await world.wait_for(lambda: [m for m in world.fake.dms_to(ALICE) if "is ready" in m.content] or None)
    (generate,) = [b for b in buttons(dm[0]) if b.startswith("lorabot:imagine:open:")]
    card = world.card(job)
    await world.wait_for(lambda: generate in buttons(world.fake.message(card.id)) or None, what="Generate on the card")

    click = await world.click(dm[0], generate, ALICE, guild_id=None, channel_id=dm[0].channel_id)
    await click.wait_callback()
    assert click.modal is not None
    fields = [row["components"][0]["custom_id"] for row in click.modal["components"]]
    submit = world.fake.modal_submit_payload(
        user_id=ALICE,
        guild_id=None,
        channel_id=dm[0].channel_id,
        modal=click.modal,
        values=dict(zip(fields, ["in the snow", "2"], strict=True)),
    )
    rec = await world.fake.send_interaction(submit)
    await rec.wait_callback()
    in_dm = await world.wait_for(
        lambda: [m for m in world.fake.dms_to(ALICE) if "in the snow" in (m.content or "")] or None,
        what="the DM result",
    )
    assert len(in_dm[0].attachments) == 2
    assert "in the snow" in text2img_requests(world)[0]["prompt"]


async def test_autocomplete_offers_only_ready_models_of_the_invoker_and_others_are_refused(world: World) -> None:
    mine = await trained(world, ALICE, name="alice model")
    theirs = await trained(world, BOB, name="bob model")
    world.sim.simulator.step_seconds = 60
    running = await world.start_training(ALICE, name="alice running")

    payload = world.fake.autocomplete_payload(
        "imagine", focused="model", value="", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL,
        options={"prompt": "x"},
    )  # fmt: skip
    rec = await world.fake.send_interaction(payload)
    await rec.wait_callback()
    assert [c["value"] for c in rec.autocomplete_choices or []] == [str(mine.id)]
    assert "alice model" in rec.autocomplete_choices[0]["name"]

    for reference in (str(theirs.id), str(running.id), "no such model"):
        refused = await imagine(world, model=reference)
        assert "isn't one of your ready models" in await reply(refused)
    assert text2img_requests(world) == []


async def test_an_error_body_is_shown_once_with_no_retry(world: World) -> None:
    await trained(world)
    world.sim.simulator.set_faults(t2i_fail=1, t2i_fail_kind="error_object", t2i_fail_message="The prompt is too long.")
    rec = await imagine(world)
    (result,) = await wait_results(world, 1)
    assert "couldn't make your pictures" in result.content and "The prompt is too long." in result.content
    assert not result.attachments and not buttons(result)
    note = await rec.wait_original(lambda m: "No pictures" in m.content, timeout=20)
    assert "The prompt is too long." in note.content
    await asyncio.sleep(0.5)
    assert len([r for r in world.sim.simulator.requests if r.endpoint == "text2img"]) == 1


async def test_a_full_queue_still_delivers_once(world: World) -> None:
    await trained(world)
    world.sim.simulator.set_faults(t2i_fail=1, t2i_fail_kind="queue_full", queue_retry_after=1, error_http_status=True)
    rec = await imagine(world, count=1)
    await rec.wait_original(lambda m: "Queued" in m.content, timeout=20)
    (result,) = await wait_results(world, 1)
    assert len(result.attachments) == 1
    await asyncio.sleep(0.5)
    assert len(results(world)) == 1
    calls = [r.http_status for r in world.sim.simulator.requests if r.endpoint == "text2img"]
    assert calls == [429, 200] and len(world.sim.simulator.generations_v6) == 1


async def test_nsfw_pictures_are_withheld_here_and_spoilered_in_an_age_restricted_channel(world: World) -> None:
    world.fake.add_channel(GUILD, NSFW_CHANNEL, name="after-dark", nsfw=True)
    await trained(world)
    world.sim.simulator.set_faults(t2i_nsfw="first")
    await imagine(world, count=2)
    (plain,) = await wait_results(world, 1)
    assert len(plain.attachments) == 1 and "1 picture(s) withheld" in plain.content
    assert not plain.attachments[0].filename.startswith("SPOILER_")

    await imagine(world, channel_id=NSFW_CHANNEL, count=2)
    (restricted,) = await wait_results(world, 1, NSFW_CHANNEL)
    names = sorted(a.filename for a in restricted.attachments)
    assert len(names) == 2 and sum(n.startswith("SPOILER_") for n in names) == 1
    assert "withheld" not in restricted.content


async def test_cooldown_and_daily_quota_hold(world: World) -> None:
    await trained(world)
    await world.app.server_settings.change(GUILD, MANAGER, {"imagine_cooldown_seconds": 600})
    first = await imagine(world)
    await first.wait_original(lambda m: "picture" in (m.content or ""), timeout=20)  # it is written
    refused = await imagine(world)
    assert "making pictures a little fast; try again <t:" in await reply(refused)
    changes = {"imagine_cooldown_seconds": 0, "max_pictures_per_user_per_day": 2}
    await world.app.server_settings.change(GUILD, MANAGER, changes)
    over = await imagine(world, count=2)
    assert "of your 2 pictures for today left" in await reply(over)
    assert len(text2img_requests(world)) <= 1


async def test_ready_samples_ride_with_the_ready_dm(tmp_path: Path) -> None:
    world, close = await open_world(tmp_path, ready_samples=2)
    try:
        await trained(world)
        dm = await world.wait_for(
            lambda: [m for m in world.fake.dms_to(ALICE) if "is ready" in m.content] or None, what="the ready DM"
        )
        assert len(dm[0].attachments) == 2 and "Here is what it makes" in dm[0].content
        await asyncio.sleep(0.5)
        assert len(world.fake.dms_to(ALICE)) == 1, "the samples came with the DM, not after it"
    finally:
        await close()


async def test_the_ready_dm_goes_on_time_when_the_samples_stall_and_they_follow_as_a_reply(tmp_path: Path) -> None:
    world, close = await open_world(tmp_path, ready_samples=1, ready_samples_deadline_seconds=10)
    try:
        world.sim.simulator.set_faults(t2i_processing_steps=8, t2i_eta=2)  # about 16 s: past the deadline
        job = await trained(world)
        dm = await world.wait_for(
            lambda: [m for m in world.fake.dms_to(ALICE) if "is ready" in m.content] or None,
            timeout=20,
            what="the ready DM, on time",
        )
        assert not dm[0].attachments and "still being made" in dm[0].content
        assert job.finished_at is not None
        follow = await world.wait_for(
            lambda: [m for m in world.fake.dms_to(ALICE) if m.attachments] or None, timeout=40, what="the samples"
        )
        assert follow[0].message_reference is not None
        assert int(follow[0].message_reference["message_id"]) == dm[0].id
    finally:
        await close()


async def test_pictures_too_large_for_one_discord_upload_are_reencoded_and_posted_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from bot.simulator import images as sim_images

    def photo_like(width: int, height: int, seed: int, count: int) -> list[bytes]:
        out = []
        for index in range(count):  # noise compresses badly: about 3 MB per 1024x1024 PNG
            rng = random.Random(seed + index)
            buffer = io.BytesIO()
            Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)).save(buffer, "PNG")
            out.append(buffer.getvalue())
        return out

    monkeypatch.setattr(sim_images, "render_pngs", photo_like)
    await trained(world)
    await imagine(world, count=4)
    (result,) = await wait_results(world, 1)
    assert len(result.attachments) == 4
    assert sum(a.size for a in result.attachments) <= 10 * 1024 * 1024
    assert any(a.filename.endswith(".jpg") for a in result.attachments)
    await asyncio.sleep(0.5)
    assert len(results(world)) == 1 and await pending_outbox_count(world.store) == 0
