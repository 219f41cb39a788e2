"""/lora-admin end to end: a server's managers change how the bot works there, and only there.

The real bot (`Application`) against the fake Discord and the provider simulator over HTTP. A
second server (OTHER_GUILD) keeps the defaults throughout, so every change is shown to apply to
its own server only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bot.app import Application
from bot.discord_standin import FakeMessage, InteractionRecord
from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, BOB, CHANNEL, GUILD, MANAGE_GUILD, MANAGER, World, embed_text, job_id_of, photos

OTHER_GUILD = 290926798626358111
OTHER_CHANNEL = 645027906669510999
CARDS = 645027906669511001
CLOSED = 645027906669511002
TRAINERS = 880000000000000001
CAROL = 53908232506183690
NSFW_HERE = 645027906669511003
NSFW_THERE = 645027906669511004
EPHEMERAL = 1 << 6
T = TypeVar("T")


# -- helpers -------------------------------------------------------------------------------------


def admin_schema(world: World) -> dict[str, Any]:
    """/lora-admin as the bot registered it."""
    return next(c for c in world.fake.commands(GUILD) if c["name"] == "lora-admin")


async def admin(
    world: World,
    subcommand: str,
    user_id: int = MANAGER,
    *,
    guild_id: int = GUILD,
    channel_id: int = CHANNEL,
    permissions: int | None = MANAGE_GUILD,
    **options: Any,
) -> InteractionRecord:
    """`/lora-admin <subcommand> option:value...`, typed as the registered command says."""
    schema = next(o for o in admin_schema(world)["options"] if o["name"] == subcommand)
    types = {o["name"]: int(o["type"]) for o in schema.get("options", [])}
    sub: dict[str, Any] = {"type": 1, "name": subcommand}
    if options:
        sub["options"] = [{"name": k, "type": types[k], "value": v} for k, v in options.items()]
    payload = world.fake.slash_command_payload(
        "lora-admin",
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        options=[sub],
        permissions=permissions,
    )
    return await world.fake.send_interaction(payload)


async def answer(rec: InteractionRecord) -> str:
    """What the member sees: the (ephemeral) answer, content and embeds."""
    await rec.wait_callback()
    message = await rec.wait_original()
    assert message.flags & EPHEMERAL, "every /lora-admin answer is ephemeral"
    return embed_text(message)


async def show(world: World, guild_id: int = GUILD, channel_id: int = CHANNEL) -> dict[str, str]:
    """`/lora-admin show` as {setting label: "value (source)"}."""
    rec = await admin(world, "show", guild_id=guild_id, channel_id=channel_id)
    await rec.wait_callback()
    message = await rec.wait_original()
    return {f["name"]: f["value"] for embed in message.embeds for f in embed.get("fields", [])}


async def preview_or_refusal(world: World, user_id: int, *, guild_id: int = GUILD, channel_id: int = CHANNEL) -> str:
    """/train as `user_id`: "preview" when the preview came, else the refusal the member read."""
    options: dict[str, Any] = {"instance_prompt": "photo of sks man", "class_prompt": "photo of a man"}
    for index, data in enumerate(photos(5), start=1):
        options[f"image{index}"] = world.fake.upload_attachment(data, f"photo{index}.jpg", "image/jpeg")
    rec = await world.command("train", user_id, options=options, guild_id=guild_id, channel_id=channel_id)
    message = await rec.wait_original(lambda m: bool(m.components) or bool(m.content), timeout=20)
    return "preview" if message.components else message.content


async def start_in(world: World, user_id: int, *, guild_id: int, channel_id: int) -> int:
    """/train then Start in that server's channel; returns the job id once it has a training id."""
    options: dict[str, Any] = {"instance_prompt": "photo of sks man", "class_prompt": "photo of a man"}
    for index, data in enumerate(photos(5), start=1):
        options[f"image{index}"] = world.fake.upload_attachment(data, f"photo{index}.jpg", "image/jpeg")
    rec = await world.command("train", user_id, options=options, guild_id=guild_id, channel_id=channel_id)
    preview = await rec.wait_original(lambda m: bool(m.components), timeout=20)
    job_id = job_id_of(preview)
    click = await world.click(preview, f"lorabot:preview:start:{job_id}", user_id)
    await click.wait_callback()
    await world.wait_job(job_id, lambda j: j.training_id is not None or j.state.is_terminal)
    return job_id


async def imagine_reply(world: World, job_id: int, *, guild_id: int = GUILD, channel_id: int = CHANNEL) -> str:
    """ALICE's /imagine with model `job_id`: the first thing she reads (a progress note or a refusal)."""
    options = {"prompt": "on a beach", "model": str(job_id)}
    rec = await world.command("imagine", ALICE, options=options, guild_id=guild_id, channel_id=channel_id)
    return (await rec.wait_original(lambda m: bool(m.content), timeout=20)).content


def accepted(note: str) -> bool:
    """The progress note of an /imagine that was taken (not refused)."""
    return note.startswith(("Queued", "Drawing"))


def second_server(world: World) -> None:
    world.fake.add_guild(OTHER_GUILD, name="Other guild", channels={OTHER_CHANNEL: "elsewhere"})
    for user_id in (ALICE, BOB, MANAGER):
        world.fake.set_member(OTHER_GUILD, user_id, permissions=MANAGE_GUILD if user_id == MANAGER else None)


async def eventually(read: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 10.0) -> T:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not check(value := await read()):
        assert asyncio.get_running_loop().time() < deadline, f"still {value!r}"
        await asyncio.sleep(0.05)
    return value


def components(message: FakeMessage) -> list[dict[str, Any]]:
    return [c for row in message.components for c in row.get("components", [])]


# -- tests ---------------------------------------------------------------------------------------


async def test_the_command_is_for_managers_and_refuses_anyone_else_who_reaches_it(world: World) -> None:
    schema = admin_schema(world)
    # Discord shows it to members with Manage Server only, and never in DMs.
    assert schema["default_member_permissions"] == str(MANAGE_GUILD)
    assert schema.get("dm_permission") is False or schema.get("contexts") == [0]

    # A server can override that: BOB (no Manage Server) reaches every subcommand, and is refused.
    attempts = [
        admin(world, "limits", BOB, permissions=0, trainings_per_member_per_day=0),
        admin(world, "show", BOB, permissions=0),
        admin(world, "channel", BOB, permissions=0, reset=True),
        admin(world, "jobs", BOB, permissions=0),
        admin(world, "forget-server", BOB, permissions=0),
    ]
    for attempt in attempts:
        text = await answer(await attempt)
        assert text == "Only members with the Manage Server permission can use /lora-admin."
    # Nothing changed: BOB's limit was not stored, and the forget confirmation never came.
    assert await world.app.stores.guild_settings.guild_overrides(GUILD) == {}
    assert (await show(world))["Trainings per member per day"] == "no limit (default)"

    # A manager's confirmation is refused to BOB, whose Manage Server is checked again on the click.
    confirm = await (await admin(world, "forget-server")).wait_original()
    yes = f"lorabot:admin:forget:yes:{MANAGER}:{GUILD}"
    assert yes in [c.get("custom_id") for c in components(confirm)]
    click = await world.click(confirm, yes, BOB, permissions=0)
    assert (await click.wait_original()).content == "This button isn't for you."
    # ...and to the manager too once they lost the permission.
    click = await world.click(confirm, yes, MANAGER, permissions=0)
    assert "Manage Server" in (await click.wait_original()).content


async def test_each_change_applies_to_its_server_only_and_show_tells_where_each_value_comes_from(
    world: World,
) -> None:
    second_server(world)
    world.fake.add_channel(GUILD, CARDS, name="cards")
    world.fake.add_channel(GUILD, CLOSED, name="closed", bot_can_send=False)
    world.fake.add_role(GUILD, TRAINERS, name="Trainers")
    world.fake.set_member(GUILD, CAROL, roles=[TRAINERS])
    world.sim.simulator.step_seconds = 30  # trainings stay running: quotas count them

    before = await show(world)
    assert before["Card channel"] == "where /train is used (default)"
    assert before["Trainings per member per day"] == "no limit (default)"
    assert before["Roles that may train"] == "everyone (default)"

    # -- the card channel: checked before it is accepted
    refused = await answer(await admin(world, "channel", channel=CLOSED))
    assert f"I can't post job cards in <#{CLOSED}>" in refused and "Nothing was changed" in refused
    changed = await answer(await admin(world, "channel", channel=CARDS))
    assert changed == f"**Card channel**: where /train is used (default) → <#{CARDS}> (set on this server)"

    here = await start_in(world, ALICE, guild_id=GUILD, channel_id=CHANNEL)
    there = await start_in(world, ALICE, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL)
    here_job, there_job = await world.store.require_job(here), await world.store.require_job(there)
    assert here_job.card_channel_id == CARDS and world.card(here_job).channel_id == CARDS
    assert not world.posted_in(CHANNEL)
    assert there_job.card_channel_id == OTHER_CHANNEL  # the other server: where /train was used

    # -- a lowered limit refuses the next /train, saying when to try again; the other server doesn't
    changed = await answer(await admin(world, "limits", trainings_per_member_per_day=1))
    assert changed == "**Trainings per member per day**: no limit (default) → 1 (set on this server)"
    refusal = await preview_or_refusal(world, ALICE)
    assert re.search(r"try again <t:\d+:R>", refusal), refusal
    assert await preview_or_refusal(world, ALICE, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL) == "preview"

    # -- a role list refuses the others, here only
    changed = await answer(await admin(world, "roles", use="train", add=TRAINERS))
    assert changed == f"**Roles that may train**: everyone (default) → <@&{TRAINERS}> (set on this server)"
    assert "limited to certain roles" in await preview_or_refusal(world, BOB)
    assert await preview_or_refusal(world, CAROL) == "preview"
    assert await preview_or_refusal(world, BOB, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL) == "preview"

    # -- the rest of the settings
    changed = await answer(
        await admin(world, "limits", pictures_per_member_per_day=7, imagine_cooldown_seconds=0, running_per_member=0)
    )
    assert "**Pictures per member per day**: 40 (default) → 7 (set on this server)" in changed
    assert "**/imagine cooldown**: 30 s (default) → none (set on this server)" in changed
    assert "**Running trainings per member**: 5 (default) → no limit (set on this server)" in changed
    await answer(await admin(world, "roles", use="generate", add=TRAINERS, managers_exempt=True))
    changed = await answer(await admin(world, "safety", off_in_age_restricted_channels=True))
    assert changed == (
        "**/imagine safety checker off in age-restricted channels**: off (default) → on (set on this server)"
    )

    # -- show reflects every change and its source; the other server shows the defaults
    after = await show(world)
    assert after["Card channel"] == f"<#{CARDS}> (set on this server)"
    assert after["Trainings per member per day"] == "1 (set on this server)"
    assert after["Trainings per server per day"] == "no limit (default)"
    assert after["Roles that may train"] == f"<@&{TRAINERS}> (set on this server)"
    assert after["Roles that may make pictures"] == f"<@&{TRAINERS}> (set on this server)"
    assert after["Managers exempt from roles and limits"] == "on (set on this server)"
    assert after["Pictures per member per day"] == "7 (set on this server)"
    assert after["/imagine cooldown"] == "none (set on this server)"
    assert after["Running trainings per member"] == "no limit (set on this server)"
    assert after["/imagine safety checker off in age-restricted channels"] == "on (set on this server)"
    assert (
        f"<@{MANAGER}>: /imagine safety checker off in age-restricted channels default → on"
        in (after["Latest changes"])
    )
    elsewhere = await show(world, OTHER_GUILD, OTHER_CHANNEL)
    assert all(value.endswith("(default)") for name, value in elsewhere.items() if name != "Latest changes")

    # -- settings survive a restart (and are read once, then cached)
    await world.app.stop()
    world.app = Application(world.settings)
    await world.app.start()
    await world.fake.wait_until_connected(20)
    assert await show(world) == after

    # -- reset puts a setting back to the default
    changed = await answer(await admin(world, "reset", setting="max_trainings_per_user_per_day"))
    assert changed == "**Trainings per member per day**: 1 (set on this server) → no limit (default)"
    changed = await answer(await admin(world, "channel", reset=True))
    assert changed == f"**Card channel**: <#{CARDS}> (set on this server) → where /train is used (default)"


async def test_a_manager_cancels_a_members_training_and_the_owner_is_told_who(world: World) -> None:
    world.sim.simulator.step_seconds = 30
    job_id = await start_in(world, ALICE, guild_id=GUILD, channel_id=CHANNEL)
    job = await world.store.require_job(job_id)
    training = world.sim.simulator.trainings[job.training_id or ""]

    listing = await (await admin(world, "jobs")).wait_original()
    text = embed_text(listing)
    assert f"#{job_id}" in text and f"<@{ALICE}>" in text
    [menu] = [c for c in components(listing) if c.get("custom_id", "").startswith("lorabot:admin:pick:")]
    assert [o["value"] for o in menu["options"]] == [str(job_id)]

    # BOB (no Manage Server) picking from the menu is refused and nothing happens.
    pick = await world.click(listing, menu["custom_id"], BOB, component_type=3, values=[str(job_id)], permissions=0)
    assert "Manage Server" in (await pick.wait_original()).content

    pick = await world.click(
        listing, menu["custom_id"], MANAGER, component_type=3, values=[str(job_id)], permissions=MANAGE_GUILD
    )
    confirm = await pick.wait_original()
    assert f"Cancel training #{job_id}" in confirm.content and f"<@{ALICE}>" in confirm.content
    await asyncio.sleep(0.2)
    assert not training.cancelled  # only asked, not done

    yes = f"lorabot:admin:cancel:yes:{MANAGER}:{job_id}"
    click = await world.click(confirm, yes, MANAGER, permissions=MANAGE_GUILD)
    done = await click.wait_original(lambda m: "is cancelled" in m.content)
    assert f"<@{ALICE}> is told you cancelled it" in done.content
    job = await world.wait_state(job_id, JobState.CANCELLED)
    assert training.cancelled
    assert job.last_error == f"Cancelled by manager (<@{MANAGER}>), a manager of Test guild."
    dm = await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the owner's DM")
    assert "was cancelled" in dm[0] and f"manager (<@{MANAGER}>), a manager of Test guild" in dm[0]

    # The server's list now shows nothing running.
    assert "None right now." in embed_text(await (await admin(world, "jobs")).wait_original())


async def test_forget_server_and_leaving_a_server(world: World) -> None:
    second_server(world)
    await answer(await admin(world, "limits", trainings_per_server_per_day=9))
    await answer(
        await admin(world, "limits", trainings_per_server_per_day=4, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL)
    )

    # forget-server, confirmed: this server's settings and history are gone; the other's stay.
    confirm = await (await admin(world, "forget-server")).wait_original()
    click = await world.click(confirm, f"lorabot:admin:forget:yes:{MANAGER}:{GUILD}", MANAGER, permissions=MANAGE_GUILD)
    assert (
        "settings and their history are deleted" in (await click.wait_original(lambda m: "Done" in m.content)).content
    )
    shown = await show(world)
    assert shown["Trainings per server per day"] == "no limit (default)" and "Latest changes" not in shown
    store = world.app.stores.guild_settings
    assert await store.guild_overrides(GUILD) == {}
    assert await store.guild_overrides(OTHER_GUILD) == {"max_trainings_per_guild_per_day": 4}

    # The bot is removed from the other server: its settings are kept (for 30 days), counting down.
    world.fake.remove_guild(OTHER_GUILD)
    await eventually(store.guilds_with_settings, lambda ids: OTHER_GUILD not in ids)
    assert await store.guild_overrides(OTHER_GUILD) == {"max_trainings_per_guild_per_day": 4}
    # Invited back: the countdown stops.
    second_server(world)
    await eventually(store.guilds_with_settings, lambda ids: OTHER_GUILD in ids)


async def test_picture_settings_follow_the_server_where_pictures_are_asked_for(world: World) -> None:
    second_server(world)
    world.fake.add_channel(GUILD, NSFW_HERE, name="after-dark", nsfw=True)
    world.fake.add_channel(OTHER_GUILD, NSFW_THERE, name="late", nsfw=True)
    world.fake.add_role(GUILD, TRAINERS, name="Trainers")
    job = await world.wait_state(await start_in(world, ALICE, guild_id=GUILD, channel_id=CHANNEL), JobState.MODEL_READY)
    await answer(await admin(world, "limits", imagine_cooldown_seconds=0, pictures_per_member_per_day=2))
    await answer(
        await admin(world, "limits", imagine_cooldown_seconds=0, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL)
    )

    # Pictures limited to a role ALICE doesn't have: refused here, fine in the other server.
    await answer(await admin(world, "roles", use="generate", add=TRAINERS))
    assert "Making pictures is limited to certain roles" in await imagine_reply(world, job.id)
    assert accepted(await imagine_reply(world, job.id, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL))
    await answer(await admin(world, "roles", use="generate", everyone=True))

    # This server allows 2 pictures a day per member, counted across servers: she made 1 in the
    # other server, so one more here, then "try again". The other server has no such limit.
    assert accepted(await imagine_reply(world, job.id))
    assert re.search(r"try again <t:\d+:R>", await imagine_reply(world, job.id))
    assert accepted(await imagine_reply(world, job.id, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL))

    # The safety switch, in age-restricted channels: off here once the server allows it; on there.
    await answer(await admin(world, "limits", pictures_per_member_per_day=0))
    await answer(await admin(world, "safety", off_in_age_restricted_channels=True))
    sent_before = len(world.sim.simulator.generations_v6)
    await imagine_reply(world, job.id, channel_id=NSFW_HERE)
    await imagine_reply(world, job.id, guild_id=OTHER_GUILD, channel_id=NSFW_THERE)
    await world.wait_for(lambda: len(world.sim.simulator.generations_v6) >= sent_before + 2, what="2 generations")
    requests = [g.request for g in list(world.sim.simulator.generations_v6.values())[sent_before:]]
    assert sorted(str(r["safety_checker"]) for r in requests) == ["no", "yes"]
