"""/status, /cancel, /mymodels, /forgetme, autocomplete and the error handler, end to end.

The real bot (`Application`) against the fake Discord and the provider simulator over HTTP.
Jobs that only need to exist (lists, autocomplete, ownership) are created through the job
service and left in `submitting` (no provider call, no outbox); jobs whose provider side
matters are real trainings.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot.discord_standin import FakeMessage, InteractionRecord
from bot.jobs.model import Job, PreviewPhoto
from bot.jobs.service import TrainingParams
from bot.jobs.states import Action, Event, EventSource, JobState
from tests.e2e.harness import ALICE, BOB, CHANNEL, GUILD, MANAGE_GUILD, MANAGER, World, embed_text
from tests.store.helpers import count_rows, pending_outbox_count

EPHEMERAL = 1 << 6
NOT_FOUND = "I can't find that job among yours"
OTHER_GUILD = 290926798626358111
OTHER_CHANNEL = 645027906669510999


# -- helpers -------------------------------------------------------------------------------------


async def make_jobs(world: World, owner_id: int, names: list[str]) -> list[Job]:
    """Jobs that exist in the store (state `submitting`, no training id), oldest first."""
    jobs = []
    for name in names:
        job = await world.app.service.create_preview(
            owner_id=owner_id,
            guild_id=GUILD,
            channel_id=CHANNEL,
            name=name,
            params=TrainingParams("photo of sks man", "photo of a man"),
            photos=[PreviewPhoto(f"photo{i}.jpg", b"jpeg") for i in range(5)],
            card_in_dms=False,
            expires_at=world.store.now() + timedelta(minutes=10),
        )
        await world.app.service.begin_submission(job.id)
        jobs.append(await world.store.require_job(job.id))
    return jobs


def buttons(message: FakeMessage) -> dict[str, dict[str, Any]]:
    """The message's buttons by custom_id."""
    return {c["custom_id"]: c for row in message.components for c in row.get("components", []) if c.get("custom_id")}


def field_names(message: FakeMessage) -> list[str]:
    return [f["name"] for embed in message.embeds for f in embed.get("fields", [])]


def listed_ids(message: FakeMessage) -> list[int]:
    """The job ids shown by a /mymodels page, in order."""
    return [int(re.match(r"#(\d+) ", name)[1]) for name in field_names(message)]  # type: ignore[index]


def footer(message: FakeMessage) -> str:
    return str((message.embeds[0].get("footer") or {}).get("text", ""))


async def click_as_shown(
    world: World, message: FakeMessage, custom_id: str, user_id: int = ALICE, **kwargs: Any
) -> InteractionRecord:
    """Click `custom_id` on `message` as if the message carried that button (rendered by an earlier
    process, or by a tampered client): discord.py only dispatches ids present on the message."""
    payload = world.fake.message_payload(message)
    payload["components"] = [
        {"type": 1, "components": [{"type": 2, "style": 2, "label": "Button", "custom_id": custom_id}]}
    ]
    return await world.fake.send_interaction(
        world.fake.component_payload(custom_id=custom_id, message=payload, user_id=user_id, **kwargs)
    )


async def reply_text(rec: InteractionRecord) -> str:
    """What the user sees in answer to a command: the (filled-in) original response."""
    await rec.wait_callback()
    return embed_text(await rec.wait_original())


async def followup_text(rec: InteractionRecord) -> str:
    return embed_text(await rec.wait_followup())


def cancel_requests(world: World, training_id: str | None = None) -> list[Any]:
    return [
        r
        for r in world.sim.simulator.requests
        if r.endpoint == "cancel_training" and (training_id is None or r.training_id == training_id)
    ]


async def settle(world: World) -> None:
    """Wait until the notifier (its own loop: never a second, concurrent pass) has delivered the
    outbox, then give a stray duplicate delivery a moment to show."""
    deadline = asyncio.get_running_loop().time() + 10
    while await pending_outbox_count(world.store):
        assert asyncio.get_running_loop().time() < deadline, "the outbox was not delivered"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


async def autocomplete(world: World, command: str, user_id: int, value: str = "") -> list[dict[str, Any]]:
    payload = world.fake.autocomplete_payload(
        command, focused="job", value=value, user_id=user_id, guild_id=GUILD, channel_id=CHANNEL
    )
    rec = await world.fake.send_interaction(payload)
    await rec.wait_callback()
    assert rec.callback_type == 8
    choices = rec.autocomplete_choices
    assert choices is not None
    return choices


# -- /status -------------------------------------------------------------------------------------


async def test_status_defaults_to_the_latest_job_and_takes_a_job_option(world: World) -> None:
    first = await world.start_training(name="first portrait")
    first = await world.wait_state(first.id, JobState.MODEL_READY, timeout=30)
    second = await world.start_training(name="second portrait")
    second = await world.wait_state(second.id, JobState.MODEL_READY, timeout=30)
    polls_before = sum(r.endpoint == "fine_tune_status" for r in world.sim.simulator.requests)

    rec = await world.command("status")
    callback = await rec.wait_callback()
    assert callback["type"] == 5 and int(callback["data"]["flags"]) & EPHEMERAL
    message = await rec.wait_original()
    assert message.ephemeral
    text = embed_text(message)
    assert f"#{second.id}: second portrait" in text
    assert "first portrait" not in text
    assert "Model ready" in text and f"`{second.training_id}`" in text
    timeline = next(f["value"] for f in message.embeds[0]["fields"] if f["name"] == "Timeline")
    assert len(timeline.splitlines()) >= 3, timeline  # submitting, deploying_gpu, ..., model_ready
    assert "Model ready" in timeline

    for ref in (str(first.id), f"#{first.id}"):
        rec = await world.command("status", options={"job": ref})
        text = await reply_text(rec)
        assert rec.ephemeral
        assert f"#{first.id}: first portrait" in text and "second portrait" not in text

    # A finished job is not asked about: the record is what counts.
    assert "Live status" not in text
    assert sum(r.endpoint == "fine_tune_status" for r in world.sim.simulator.requests) == polls_before


async def test_status_shows_the_providers_live_status_for_a_running_job(world: World) -> None:
    world.sim.simulator.step_seconds = 60
    job = await world.start_training(name="running portrait")
    assert job.training_id is not None
    world.sim.simulator.advance(job.training_id)
    await world.sim.simulator.wait_for_status(job.training_id, "training_started")

    rec = await world.command("status")
    text = await reply_text(rec)
    assert rec.ephemeral
    assert f"#{job.id}: running portrait" in text
    live = next(f["value"] for f in (await rec.wait_original()).embeds[0]["fields"] if f["name"] == "Live status")
    assert "`training_started`" in live
    assert "ETA 30 minutes" in live
    assert "Step:1 Training Started" in live
    assert any(
        r.endpoint == "fine_tune_status" and r.training_id == job.training_id for r in world.sim.simulator.requests
    )

    # Asked again within the provider's 30 s duplicate window, the answer is reused, not re-requested.
    asked = len([r for r in world.sim.simulator.requests if r.endpoint == "fine_tune_status"])
    assert "`training_started`" in await reply_text(await world.command("status"))
    assert len([r for r in world.sim.simulator.requests if r.endpoint == "fine_tune_status"]) == asked

    # The provider not answering is said plainly; the rest of the card is still shown.
    other = await world.start_training(name="second portrait")
    world.sim.simulator.faults.status_errors = 4  # every attempt of one status call
    rec = await world.command("status", options={"job": str(other.id)})
    message = await rec.wait_original(timeout=20)
    live = next(f["value"] for f in message.embeds[0]["fields"] if f["name"] == "Live status")
    assert live.startswith("Unavailable right now ("), live
    assert f"#{other.id}: second portrait" in embed_text(message)
    assert world.sim.simulator.faults.status_errors == 0


async def test_another_users_job_reads_exactly_like_a_missing_one(world: World) -> None:
    (alice_job,) = await make_jobs(world, ALICE, ["alice-secret-portrait"])
    (bob_job,) = await make_jobs(world, BOB, ["bob portrait"])

    texts = {}
    for command in ("status", "cancel"):
        for label, ref in (("other", str(alice_job.id)), ("missing", "987654321"), ("garbage", "no such job")):
            rec = await world.command(command, BOB, options={"job": ref})
            texts[command, label] = await reply_text(rec)
            assert rec.ephemeral
            assert not (await rec.wait_original()).components
    for command in ("status", "cancel"):
        assert NOT_FOUND in texts[command, "other"]
        assert texts[command, "other"] == texts[command, "missing"] == texts[command, "garbage"]
    assert texts["status", "other"] == texts["cancel", "other"]
    assert not any("alice-secret" in text for text in texts.values())

    # BOB's default is BOB's own latest job, never ALICE's newer one.
    (newer_alice,) = await make_jobs(world, ALICE, ["alice-newest"])
    text = await reply_text(await world.command("status", BOB))
    assert f"#{bob_job.id}: bob portrait" in text and "alice" not in text
    assert newer_alice.id > bob_job.id
    assert (await world.store.require_job(alice_job.id)).state is JobState.SUBMITTING


# -- autocomplete ---------------------------------------------------------------------------------


async def test_autocomplete_lists_only_the_invokers_jobs_newest_first(world: World) -> None:
    alice: list[Job] = []
    bob: list[Job] = []
    for index in range(27):  # interleaved ids, so filtering by owner is what separates them
        alice += await make_jobs(world, ALICE, [f"alice-{index:02d}"])
        if index % 9 == 0:
            bob += await make_jobs(world, BOB, [f"bob-secret-{index:02d}"])
    alice_ids = sorted((j.id for j in alice), reverse=True)
    bob_ids = sorted((j.id for j in bob), reverse=True)

    for command in ("status", "cancel"):
        choices = await autocomplete(world, command, ALICE)
        assert [int(c["value"]) for c in choices] == alice_ids[:25]
        assert all(c["name"].startswith(f"#{c['value']} alice-") for c in choices)
        assert not any("bob" in c["name"] for c in choices)

        choices = await autocomplete(world, command, BOB)
        assert [int(c["value"]) for c in choices] == bob_ids
        assert not any("alice" in c["name"] for c in choices)

    # Typing narrows the list; typing another user's job name or id finds nothing.
    choices = await autocomplete(world, "status", ALICE, "alice-26")
    assert [int(c["value"]) for c in choices] == [alice[26].id]
    assert await autocomplete(world, "status", BOB, "alice-26") == []
    assert await autocomplete(world, "cancel", BOB, str(alice[26].id)) == []
    assert await autocomplete(world, "cancel", ALICE, "bob-secret") == []


# -- /cancel --------------------------------------------------------------------------------------


async def test_cancel_asks_then_cancels_with_the_provider_and_stays_cancelled(world: World) -> None:
    world.sim.simulator.step_seconds = 30
    job = await world.start_training(name="cancel me")
    training_id = job.training_id
    assert training_id is not None
    training = world.sim.simulator.trainings[training_id]

    # "No" changes nothing.
    rec = await world.command("cancel")
    callback = await rec.wait_callback()
    assert callback["type"] == 4 and rec.ephemeral
    confirm = await rec.wait_original()
    assert f"Cancel training #{job.id} **cancel me**" in confirm.content
    yes, no = f"lorabot:cancel:yes:{ALICE}:{job.id}", f"lorabot:cancel:no:{ALICE}:{job.id}"
    assert set(buttons(confirm)) == {yes, no}
    click = await world.click(confirm, no)
    assert (await click.wait_callback())["type"] == 7
    assert world.fake.message(confirm.id).content == "OK, nothing was changed."
    assert world.fake.message(confirm.id).components == []
    await asyncio.sleep(0.2)
    assert not (await world.store.require_job(job.id)).state.is_terminal
    assert not training.cancelled and cancel_requests(world) == []

    # "Yes" cancels with the provider (the documented `cancle_training` path) and records it.
    rec = await world.command("cancel", options={"job": str(job.id)})
    confirm = await rec.wait_original()
    click = await world.click(confirm, yes)
    assert (await click.wait_callback())["type"] == 6
    done = await click.wait_original(lambda m: "is cancelled" in m.content)
    assert done.id == confirm.id and done.components == []
    assert done.content == f"Training #{job.id} **cancel me** is cancelled."
    assert training.cancelled
    requests = cancel_requests(world, training_id)
    assert len(requests) == 1 and requests[0].path.endswith(f"/cancle_training/{training_id}")
    job = await world.store.require_job(job.id)
    assert job.state is JobState.CANCELLED
    assert job.last_error == "Cancelled by its owner."

    # The provider now calls the stopped run a success; our record still says cancelled.
    status = await world.app.provider.training_status(training_id)
    assert status.status == "training_success"
    await world.app.reconciler.run_once(everything=True)
    assert training.webhook_url is not None
    async with httpx.AsyncClient() as client:
        late = await client.post(
            training.webhook_url,
            json={
                "status": "success",
                "training_status": "training_success",
                "logs": "Training stopped by user request",
                "model_id": training_id,
            },
        )
    assert late.status_code == 200 and "already finished" in late.text  # authentic: welcome, and ignored
    # A poll answer that raced with the cancel goes through the state machine and changes nothing.
    raced = await world.app.service.record(
        job.id, Event(Action.PROVIDER_STATUS, EventSource.POLL, status="training_success")
    )
    assert not raced.changed
    assert (await world.store.require_job(job.id)).state is JobState.CANCELLED

    # The card shows it, the owner is told exactly once, /status agrees.
    await world.wait_for(lambda: "**Cancelled**" in embed_text(world.card(job)), what="card shows Cancelled")
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the cancel DM")
    await settle(world)
    dms = world.dm_texts(ALICE)
    assert len(dms) == 1, dms
    assert f"**cancel me** (job #{job.id}) was cancelled" in dms[0]
    assert "**Cancelled**" in embed_text(world.card(job))
    text = await reply_text(await world.command("status"))
    assert "**Cancelled**" in text and "Live status" not in text

    # Cancelling again: already finished.
    text = await reply_text(await world.command("cancel", options={"job": str(job.id)}))
    assert "already finished" in text and "can't be cancelled" in text
    assert len(cancel_requests(world)) == 1


async def test_only_the_owner_or_a_manager_of_that_guild_can_cancel(world: World) -> None:
    world.sim.simulator.step_seconds = 30
    job = await world.start_training(name="alice private run")
    training = world.sim.simulator.trainings[job.training_id or ""]
    missing = await reply_text(await world.command("cancel", BOB, options={"job": "987654321"}))

    # BOB (no permissions) cannot even see it.
    rec = await world.command("cancel", BOB, options={"job": str(job.id)})
    assert await reply_text(rec) == missing
    assert NOT_FOUND in missing and "alice private run" not in missing
    assert not (await rec.wait_original()).components

    # BOB clicking ALICE's confirmation is refused, and so is a custom_id he forged for himself.
    confirm = await (await world.command("cancel", options={"job": str(job.id)})).wait_original()
    click = await world.click(confirm, f"lorabot:cancel:yes:{ALICE}:{job.id}", BOB)
    assert (await click.wait_callback())["type"] == 4 and click.ephemeral
    assert (await click.wait_original()).content == "This button isn't for you."
    forged = await click_as_shown(world, confirm, f"lorabot:cancel:yes:{BOB}:{job.id}", BOB)
    assert NOT_FOUND in await followup_text(forged)
    assert (await forged.wait_followup()).ephemeral
    assert "is cancelled" not in world.fake.message(confirm.id).content
    await asyncio.sleep(0.2)
    assert not (await world.store.require_job(job.id)).state.is_terminal
    assert not training.cancelled and cancel_requests(world) == []

    # A manager of another guild is nobody here.
    world.fake.add_guild(OTHER_GUILD, channels={OTHER_CHANNEL: "elsewhere"})
    world.fake.set_member(OTHER_GUILD, MANAGER, permissions=MANAGE_GUILD)
    rec = await world.command(
        "cancel",
        MANAGER,
        options={"job": str(job.id)},
        guild_id=OTHER_GUILD,
        channel_id=OTHER_CHANNEL,
        permissions=MANAGE_GUILD,
    )
    assert await reply_text(rec) == missing

    # A member with Manage Server in the job's guild can cancel it; the owner is told.
    rec = await world.command("cancel", MANAGER, options={"job": str(job.id)}, permissions=MANAGE_GUILD)
    confirm = await rec.wait_original()
    assert rec.ephemeral and f"#{job.id} **alice private run**" in confirm.content
    yes = f"lorabot:cancel:yes:{MANAGER}:{job.id}"
    assert yes in buttons(confirm)
    click = await world.click(confirm, yes, MANAGER, permissions=MANAGE_GUILD)
    await click.wait_original(lambda m: "is cancelled" in m.content)
    assert training.cancelled and len(cancel_requests(world)) == 1
    job = await world.store.require_job(job.id)
    assert job.state is JobState.CANCELLED
    assert job.last_error == f"Cancelled by manager (<@{MANAGER}>), a manager of Test guild."
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the owner's DM")
    await settle(world)
    assert len(world.dm_texts(ALICE)) == 1 and "was cancelled" in world.dm_texts(ALICE)[0]
    assert f"Cancelled by manager (<@{MANAGER}>), a manager of Test guild." in world.dm_texts(ALICE)[0]
    assert world.dm_texts(MANAGER) == []


async def test_a_finished_job_cannot_be_cancelled(world: World) -> None:
    world.sim.simulator.step_seconds = 60
    job = await world.start_training(name="photo finish")
    assert job.training_id is not None
    confirm = await (await world.command("cancel")).wait_original()

    # The job finishes while the confirmation is on screen: "Yes" then changes nothing.
    world.sim.simulator.step_seconds = 0.05
    world.sim.simulator.advance(job.training_id)
    await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    click = await world.click(confirm, f"lorabot:cancel:yes:{ALICE}:{job.id}")
    followup = await click.wait_followup()
    assert followup.ephemeral
    assert followup.content == f"Job #{job.id} has already finished (model ready) and can't be cancelled."

    # /cancel on it says so at once, by id and by default (the latest), without a confirmation.
    for options in ({"job": str(job.id)}, None):
        rec = await world.command("cancel", options=options)
        text = await reply_text(rec)
        assert rec.ephemeral
        assert text == f"Job #{job.id} has already finished (model ready) and can't be cancelled."
        assert not (await rec.wait_original()).components
    assert cancel_requests(world) == []
    assert not world.sim.simulator.trainings[job.training_id].cancelled
    assert (await world.store.require_job(job.id)).state is JobState.MODEL_READY


# -- /mymodels ------------------------------------------------------------------------------------


async def test_mymodels_pages_through_the_invokers_jobs_newest_first(world: World) -> None:
    real = await world.start_training(name="the real one")
    real = await world.wait_state(real.id, JobState.MODEL_READY, timeout=30)
    alice = [real]
    for index in range(22):
        alice += await make_jobs(world, ALICE, [f"alice-{index:02d}"])
        if index % 7 == 0:
            await make_jobs(world, BOB, [f"bob-secret-{index:02d}"])
    newest_first = [j.id for j in sorted(alice, key=lambda j: j.id, reverse=True)]

    rec = await world.command("mymodels")
    callback = await rec.wait_callback()
    assert callback["type"] == 4 and rec.ephemeral
    page = await rec.wait_original()
    assert listed_ids(page) == newest_first[:10]
    assert footer(page) == "Page 1 of 3 · 23 trainings"
    prev1, next1 = f"lorabot:models:{ALICE}:0:prev", f"lorabot:models:{ALICE}:1:next"
    assert buttons(page)[prev1].get("disabled") is True
    assert not buttons(page)[next1].get("disabled")
    first_field = page.embeds[0]["fields"][0]
    assert first_field["name"] == f"#{newest_first[0]} · alice-21"
    assert first_field["value"].startswith("Submitting to the provider · no model id · created <t:")

    # Next, Next: the same message is edited in place; page 3 has the last 3.
    click = await world.click(page, next1)
    assert (await click.wait_callback())["type"] == 7
    page = world.fake.message(page.id)
    assert listed_ids(page) == newest_first[10:20]
    assert footer(page) == "Page 2 of 3 · 23 trainings"
    click = await world.click(page, f"lorabot:models:{ALICE}:2:next")
    await click.wait_callback()
    page = world.fake.message(page.id)
    assert listed_ids(page) == newest_first[20:]
    assert len(listed_ids(page)) == 3
    assert buttons(page)[f"lorabot:models:{ALICE}:3:next"].get("disabled") is True
    last = page.embeds[0]["fields"][-1]
    created = f"<t:{int(real.created_at.timestamp())}:f>"
    assert last == {
        "name": f"#{real.id} · the real one",
        "value": f"Model ready · `{real.training_id}` · 0 pictures made · created {created}",
        "inline": False,
    }

    # Previous goes back.
    click = await world.click(page, f"lorabot:models:{ALICE}:1:prev")
    await click.wait_callback()
    page = world.fake.message(page.id)
    assert listed_ids(page) == newest_first[10:20]
    assert len(page.edit_bodies) == 3
    assert page.ephemeral

    # BOB's jobs never show up on ALICE's pages.
    assert "bob" not in embed_text(page)


async def test_mymodels_buttons_are_stateless_and_only_for_their_user(world: World) -> None:
    alice = await make_jobs(world, ALICE, [f"alice-{i:02d}" for i in range(12)])
    bob = await make_jobs(world, BOB, ["bob-secret-a", "bob-secret-b"])
    page = await (await world.command("mymodels")).wait_original()
    edits = len(page.edit_bodies)

    # BOB clicking ALICE's Next is refused and ALICE's message is untouched.
    click = await world.click(page, f"lorabot:models:{ALICE}:1:next", BOB)
    assert (await click.wait_callback())["type"] == 4 and click.ephemeral
    assert (await click.wait_original()).content == "These aren't your trainings."
    assert len(world.fake.message(page.id).edit_bodies) == edits

    # Custom ids built by hand (as after a restart) work: everything is in the id.
    click = await click_as_shown(world, page, f"lorabot:models:{ALICE}:1:prev")
    assert (await click.wait_callback())["type"] == 7
    assert listed_ids(world.fake.message(page.id)) == [alice[1].id, alice[0].id]
    click = await click_as_shown(world, page, f"lorabot:models:{ALICE}:99:next")  # past the end: the last page
    await click.wait_callback()
    assert footer(world.fake.message(page.id)) == "Page 2 of 2 · 12 trainings"

    # BOB's own list holds only his jobs, and a forged id of ALICE's shows him nothing of hers.
    bob_page = await (await world.command("mymodels", BOB)).wait_original()
    assert listed_ids(bob_page) == [bob[1].id, bob[0].id]
    assert footer(bob_page) == "Page 1 of 1 · 2 trainings"
    click = await click_as_shown(world, bob_page, f"lorabot:models:{ALICE}:0:next", BOB)
    assert (await click.wait_original()).content == "These aren't your trainings."
    assert "alice" not in embed_text(world.fake.message(bob_page.id))


# -- /forgetme ------------------------------------------------------------------------------------


async def count_user_data(world: World, user_id: int) -> tuple[int, int, int, int]:
    """(jobs, job events, outbox rows, users rows) stored for `user_id`."""
    return (
        await count_rows(world.store, "SELECT COUNT(*) FROM jobs WHERE owner_id = ?", user_id),
        await count_rows(
            world.store,
            "SELECT COUNT(*) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.owner_id = ?",
            user_id,
        ),
        await count_rows(
            world.store, "SELECT COUNT(*) FROM outbox o JOIN jobs j ON j.id = o.job_id WHERE j.owner_id = ?", user_id
        ),
        await count_rows(world.store, "SELECT COUNT(*) FROM users WHERE user_id = ?", user_id),
    )


async def test_forgetme_cancels_running_trainings_then_deletes_only_the_invokers_data(world: World) -> None:
    bob_job = await world.start_training(BOB, name="bob keeps this")
    await world.wait_state(bob_job.id, JobState.MODEL_READY, timeout=30)
    done = await world.start_training(name="alice finished")
    await world.wait_state(done.id, JobState.MODEL_READY, timeout=30)
    world.sim.simulator.step_seconds = 30
    running = await world.start_training(name="alice running")
    assert running.training_id is not None
    training = world.sim.simulator.trainings[running.training_id]
    await world.store.mark_dms_closed(ALICE)
    await world.store.mark_dms_closed(BOB)
    alice_ids = [done.id, running.id]
    await settle(world)

    alice_before = await count_user_data(world, ALICE)
    bob_before = await count_user_data(world, BOB)
    assert alice_before[0] == 2 and all(alice_before), alice_before
    assert all(bob_before), bob_before

    rec = await world.command("forgetme")
    assert (await rec.wait_callback())["type"] == 4 and rec.ephemeral
    confirm = await rec.wait_original()
    assert "deleted from the provider" in confirm.content
    yes, no = f"lorabot:forget:yes:{ALICE}:0", f"lorabot:forget:no:{ALICE}:0"
    assert set(buttons(confirm)) == {yes, no}

    # BOB can't answer for ALICE; "No" keeps everything.
    click = await world.click(confirm, yes, BOB)
    assert (await click.wait_original()).content == "This button isn't for you."
    click = await world.click(confirm, no)
    await click.wait_callback()
    assert world.fake.message(confirm.id).content == "OK, nothing was changed."
    assert (await count_user_data(world, ALICE))[0] == 2
    assert not training.cancelled

    # "Yes": the running training is cancelled with the provider, then ALICE's data is gone.
    confirm = await (await world.command("forgetme")).wait_original()
    click = await world.click(confirm, yes)
    result = await click.wait_original(lambda m: m.content.startswith("Done"))
    assert result.content == "Done: 2 training record(s), their models on the provider and your settings were deleted."
    assert training.cancelled
    assert [r.training_id for r in cancel_requests(world)] == [running.training_id]
    # Both of ALICE's models are deleted from the provider account; BOB's is untouched.
    deleted = {r.training_id for r in world.sim.simulator.requests if r.endpoint == "finetune_delete"}
    assert deleted == {done.training_id, running.training_id}
    assert world.sim.simulator.trainings[done.training_id].deleted
    assert not world.sim.simulator.trainings[bob_job.training_id].deleted
    assert await count_user_data(world, ALICE) == (0, 0, 0, 0)
    for job_id in alice_ids:
        assert await world.store.get_job(job_id) is None
        assert await count_rows(world.store, "SELECT COUNT(*) FROM job_events WHERE job_id = ?", job_id) == 0
        assert await count_rows(world.store, "SELECT COUNT(*) FROM outbox WHERE job_id = ?", job_id) == 0
    assert await count_user_data(world, BOB) == bob_before
    assert (await world.store.require_job(bob_job.id)).state is JobState.MODEL_READY

    # Afterwards ALICE simply has nothing, and the bot carries on.
    await settle(world)
    assert await reply_text(await world.command("status")) == "You have no trainings yet. Start one with /train."
    page = await (await world.command("mymodels")).wait_original()
    assert footer(page) == "Page 1 of 1 · 0 trainings"


# -- the error handler ----------------------------------------------------------------------------


REFERENCE = re.compile(r"`([0-9a-f]{8})`")


def logged_reference(caplog: pytest.LogCaptureFixture, reference: str) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name == "cogs.errors" and reference in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in caplog.records if r.name == "cogs.errors"]
    return records[0]


async def test_unexpected_errors_show_a_reference_that_is_logged_with_the_traceback(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await make_jobs(world, ALICE, ["alice-00"])
    caplog.set_level(logging.INFO)

    async def broken(*args: Any, **kwargs: Any) -> list[Job]:
        raise RuntimeError("database exploded (test)")

    monkeypatch.setattr(world.app.store, "jobs_for_owner", broken)

    # A command answered directly, and one that deferred first.
    for command in ("mymodels", "status"):
        rec = await world.command(command)
        text = await reply_text(rec)
        assert rec.ephemeral
        assert text.startswith("Sorry, something went wrong on my side."), text
        assert "database exploded" not in text and "Traceback" not in text
        match = REFERENCE.search(text)
        assert match, text
        record = logged_reference(caplog, match[1])
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert f"by user {ALICE}" in record.getMessage() and command in record.getMessage()
        assert "database exploded (test)" in (record.exc_text or logging.Formatter().formatException(record.exc_info))

    # An error after a confirmation button was pressed (the command itself had succeeded).
    confirm = await (await world.command("forgetme")).wait_original()

    async def broken_forget(user_id: int) -> int:
        raise RuntimeError("forget failed (test)")

    monkeypatch.setattr(world.app.service, "forget_user", broken_forget)
    click = await world.click(confirm, f"lorabot:forget:yes:{ALICE}:0")
    followup = await click.wait_followup()
    assert followup.ephemeral
    assert followup.content.startswith("Sorry, something went wrong on my side."), followup.content
    match = REFERENCE.search(followup.content)
    assert match, followup.content
    record = logged_reference(caplog, match[1])
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError

    # The bot keeps working.
    monkeypatch.undo()
    page = await (await world.command("mymodels")).wait_original()
    assert field_names(page) and field_names(page)[0].endswith("alice-00")
    assert world.app.bot.connection_status() == "connected"
    assert (await count_user_data(world, ALICE))[0] == 1


async def test_domain_errors_are_short_friendly_and_not_logged_as_errors(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    no_jobs = "You have no trainings yet. Start one with /train."
    for command, options, expected in (
        ("status", None, no_jobs),
        ("cancel", None, no_jobs),
        ("status", {"job": "12345"}, "I can't find that job among yours. Use /mymodels to list them."),
        ("cancel", {"job": "#12345"}, "I can't find that job among yours. Use /mymodels to list them."),
    ):
        rec = await world.command(command, BOB, options=options)
        assert await reply_text(rec) == expected
        assert rec.ephemeral

    page = await (await world.command("mymodels", BOB)).wait_original()
    assert page.ephemeral
    assert no_jobs in embed_text(page)
    assert footer(page) == "Page 1 of 1 · 0 trainings"
    assert all(b.get("disabled") for b in buttons(page).values())
    assert not [r for r in caplog.records if r.name == "cogs.errors" and r.levelno >= logging.ERROR]


async def test_an_unexpected_error_while_paging_shows_a_reference(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await make_jobs(world, ALICE, [f"alice-{i:02d}" for i in range(12)])
    page = await (await world.command("mymodels")).wait_original()

    async def broken(*args: Any, **kwargs: Any) -> list[Job]:
        raise RuntimeError("database exploded (test)")

    monkeypatch.setattr(world.app.store, "jobs_for_owner", broken)
    click = await world.click(page, f"lorabot:models:{ALICE}:1:next")
    await click.wait_callback()
    messages = [m for m in click.messages if m.id != page.id]
    assert len(messages) == 1 and messages[0].ephemeral, click.messages
    match = REFERENCE.search(messages[0].content)
    assert match, messages[0].content
    assert logged_reference(caplog, match[1]).exc_info is not None
    assert world.fake.message(page.id).edit_bodies == []  # the page itself is left as it was

    monkeypatch.undo()
    click = await world.click(page, f"lorabot:models:{ALICE}:1:next")
    await click.wait_callback()
    assert footer(world.fake.message(page.id)) == "Page 2 of 2 · 12 trainings"
