"""Tests of the fake Discord itself, driving the real discord.py client against it."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from bot.discord_standin import FakeDiscord, pointed_at

GUILD = 900_000_000_000_000_001
CHANNEL = 900_000_000_000_000_002
USER = 900_000_000_000_000_003


def png_bytes(width: int = 8, height: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# A tiny bot: app commands, an autocomplete, a modal and a button view
# ---------------------------------------------------------------------------------------------------------------


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="Say something", custom_id="fb:text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


class ClickView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.clicked: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @discord.ui.button(label="Click me", custom_id="tiny:click")
    async def click(self, interaction: discord.Interaction, button: discord.ui.Button[ClickView]) -> None:
        await interaction.response.edit_message(content=f"clicked by {interaction.user.id}", view=None)
        self.clicked.set_result(interaction.user.id)


@app_commands.command(description="Read an image and post it back")
async def echo(interaction: discord.Interaction, image: discord.Attachment, caption: str = "done") -> None:
    await interaction.response.defer(thinking=True)
    data = await image.read()
    await interaction.edit_original_response(content=f"read {len(data)} bytes of {image.content_type}")
    assert isinstance(interaction.channel, discord.TextChannel)
    await interaction.channel.send(caption, file=discord.File(io.BytesIO(data), filename="echo.png"))


@app_commands.command(description="Defer, wait for the test, then edit")
async def hold(interaction: discord.Interaction) -> None:
    bot = interaction.client
    assert isinstance(bot, TinyBot)
    await interaction.response.defer(ephemeral=True)
    await bot.release.wait()
    try:
        await interaction.edit_original_response(content="too late?")
    except discord.HTTPException as exc:
        bot.hold_result.set_result(exc)
    else:
        bot.hold_result.set_result(None)


async def flavour_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    names = ["vanilla", "chocolate", "strawberry"]
    return [app_commands.Choice(name=n, value=n) for n in names if current in n]


@app_commands.command(description="Pick a flavour")
@app_commands.autocomplete(flavour=flavour_choices)
async def pick(interaction: discord.Interaction, flavour: str) -> None:
    await interaction.response.send_message(flavour)


@app_commands.command(description="Open a modal")
async def feedback(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(FeedbackModal())


class Card(discord.ui.LayoutView):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        gallery = discord.ui.MediaGallery(discord.MediaGalleryItem("attachment://card.png"))
        self.add_item(discord.ui.Container(discord.ui.TextDisplay("## Card"), gallery))


@app_commands.command(description="Defer, then send a components-v2 card as followups")
async def card(interaction: discord.Interaction) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)
    file = discord.File(io.BytesIO(png_bytes(16, 9)), filename="card.png")
    await interaction.followup.send(view=Card(), file=file, wait=True)
    await interaction.followup.send("second", ephemeral=True, wait=True)


class TinyBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.release = asyncio.Event()
        self.hold_result: asyncio.Future[discord.HTTPException | None] = asyncio.get_running_loop().create_future()
        self.resumed = asyncio.Event()

    async def setup_hook(self) -> None:
        for cmd in (echo, hold, pick, feedback, card):
            self.tree.add_command(cmd)

    async def on_resumed(self) -> None:
        self.resumed.set()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        server.add_guild(GUILD, name="Fake guild", channels={CHANNEL: "general"})
        server.add_user(USER, username="alice")
        server.set_member(GUILD, USER)
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    with pointed_at(fake):
        client = TinyBot()
        task = asyncio.create_task(client.start(fake.token))
        try:
            await asyncio.wait_for(client.wait_until_ready(), 10)
            yield client
        finally:
            await client.close()
            await asyncio.wait_for(task, 10)
    assert fake.errors == []


def channel_of(bot: TinyBot) -> discord.TextChannel:
    channel = bot.get_channel(CHANNEL)
    assert isinstance(channel, discord.TextChannel)
    return channel


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------


async def test_login_gateway_ready_and_guild_available(fake: FakeDiscord, bot: TinyBot) -> None:
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(GUILD)
    assert guild is not None and not guild.unavailable and guild.name == "Fake guild"
    channel = channel_of(bot)
    perms = channel.permissions_for(guild.me)
    assert perms.send_messages and perms.attach_files and perms.embed_links

    login = [r for r in fake.requests if r.route in ("/users/@me", "/oauth2/applications/@me")]
    assert len(login) == 2 and all(r.is_bot_authorized(fake.token) for r in login)
    (session,) = fake.gateway.live_sessions()
    assert session.intents == discord.Intents.default().value
    assert session.connection is not None and session.connection.compressor is not None  # zlib-stream honoured
    assert fake.unknown_requests == []


async def test_tree_sync_to_guild_is_recorded(fake: FakeDiscord, bot: TinyBot) -> None:
    bot.tree.copy_global_to(guild=discord.Object(GUILD))
    synced = await bot.tree.sync(guild=discord.Object(GUILD))

    assert fake.sync_count(GUILD) == 1 and fake.sync_count(None) == 0
    registered = {c["name"]: c for c in fake.commands(GUILD)}
    assert set(registered) == {"echo", "hold", "pick", "feedback", "card"}
    assert {c.name: c.id for c in synced} == {n: int(c["id"]) for n, c in registered.items()}
    echo_options = registered["echo"]["options"]
    assert [(o["name"], o["type"], o.get("required", False)) for o in echo_options] == [
        ("image", 11, True),
        ("caption", 3, False),
    ]
    payload = fake.slash_command_payload("echo", user_id=USER, guild_id=GUILD, channel_id=CHANNEL)
    assert payload["data"]["id"] == registered["echo"]["id"] and payload["data"]["guild_id"] == str(GUILD)

    await bot.tree.sync(guild=discord.Object(GUILD))  # ids are stable across overwrites
    assert {c["name"]: c["id"] for c in fake.commands(GUILD)} == {n: c["id"] for n, c in registered.items()}


async def test_slash_command_with_attachment(fake: FakeDiscord, bot: TinyBot) -> None:
    image = png_bytes(8, 4)
    att = fake.upload_attachment(image, "photo one.png", "image/png")
    assert (att["width"], att["height"], att["size"], att["ephemeral"]) == (8, 4, len(image), True)
    assert att["url"].startswith(f"{fake.url}/cdn/ephemeral-attachments/") and "&hm=" in att["url"]

    rec = await fake.send_interaction(
        fake.slash_command_payload(
            "echo", user_id=USER, guild_id=GUILD, channel_id=CHANNEL, options={"image": att, "caption": "here"}
        )
    )
    callback = await rec.wait_callback(timeout=3)
    assert callback["type"] == 5
    assert rec.callback_latency is not None and rec.callback_latency < 3.0

    original = await rec.wait_original(lambda m: m.content.startswith("read"))
    assert original.content == f"read {len(image)} bytes of image/png"
    assert not original.ephemeral and not original.loading and original.edit_count == 1
    assert fake.downloads(att) == 1

    posted = await fake.wait_for_message(lambda m: m.channel_id == CHANNEL and m.content == "here")
    (stored,) = posted.attachments
    assert (stored.filename, stored.content_type, stored.width, stored.height) == ("echo.png", "image/png", 8, 4)
    assert fake.channel_messages(CHANNEL) == [original, posted]

    async with aiohttp.ClientSession() as http, http.get(posted.attachment_urls[0]) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
        assert await resp.read() == image
    assert stored.downloads == 1
    post = fake.requests_to("POST", "/channels/{channel_id}/messages")[0]
    assert post.is_bot_authorized(fake.token) and post.files[0].data == image
    assert fake.unknown_requests == []


async def test_button_click_reaches_view(fake: FakeDiscord, bot: TinyBot) -> None:
    view = ClickView()
    sent = await channel_of(bot).send("press it", view=view)
    msg = fake.message(sent.id)
    assert msg.custom_ids() == ["tiny:click"]

    rec = await fake.send_interaction(fake.component_payload(custom_id="tiny:click", message=msg, user_id=USER))
    assert await asyncio.wait_for(view.clicked, 5) == USER
    callback = await rec.wait_callback()
    assert callback["type"] == 7
    assert msg.content == f"clicked by {USER}" and msg.components == [] and len(msg.history) == 1


async def test_autocomplete_and_modal(fake: FakeDiscord, bot: TinyBot) -> None:
    rec = await fake.send_interaction(
        fake.autocomplete_payload(
            "pick", focused="flavour", value="straw", user_id=USER, guild_id=GUILD, channel_id=CHANNEL
        )
    )
    await rec.wait_callback()
    assert rec.autocomplete_choices == [{"name": "strawberry", "value": "strawberry"}]

    opened = await fake.send_interaction(
        fake.slash_command_payload("feedback", user_id=USER, guild_id=GUILD, channel_id=CHANNEL)
    )
    await opened.wait_callback()
    assert opened.modal is not None and opened.modal["title"] == "Feedback"
    submitted = await fake.send_interaction(
        fake.modal_submit_payload(
            modal=opened.modal, values={"fb:text": "lovely"}, user_id=USER, guild_id=GUILD, channel_id=CHANNEL
        )
    )
    reply = await submitted.wait_original()
    assert reply.content == "thanks: lovely" and reply.ephemeral


async def test_first_followup_after_defer_fills_the_loading_message(fake: FakeDiscord, bot: TinyBot) -> None:
    rec = await fake.send_interaction(
        fake.slash_command_payload("card", user_id=USER, guild_id=GUILD, channel_id=CHANNEL)
    )
    second = await rec.wait_followup(lambda m: m.content == "second")
    card = rec.original
    assert card is not None and rec.followups == [card, second]  # the first followup edited @original
    assert card.ephemeral and not card.loading and card.flags & 32768  # IS_COMPONENTS_V2
    media = card.components[0]["components"][1]["items"][0]["media"]
    assert media["url"] == card.attachment_urls[0] and (media["width"], media["height"]) == (16, 9)
    assert second.id != card.id and second.ephemeral


async def test_dm_to_user_with_closed_dms_is_forbidden(fake: FakeDiscord, bot: TinyBot) -> None:
    user = await bot.fetch_user(USER)
    fake.close_dms(USER)
    with pytest.raises(discord.Forbidden) as excinfo:
        await user.send("hello")
    assert excinfo.value.status == 403 and excinfo.value.code == 50007
    assert fake.dms_to(USER) == []

    fake.open_dms(USER)
    await user.send("hello again")
    assert [m.content for m in fake.dms_to(USER)] == ["hello again"]


async def test_rate_limit_is_retried(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.rate_limit_next(r"^/channels/\d+/messages$", retry_after=0.1)
    await channel_of(bot).send("after a 429")

    posts = fake.requests_to("POST", "/channels/{channel_id}/messages")
    assert [r.status for r in posts] == [429, 200]
    assert posts[1].time - posts[0].time >= 0.09
    assert [m.content for m in fake.channel_messages(CHANNEL)] == ["after a 429"]


async def test_editing_a_deleted_message_is_not_found(fake: FakeDiscord, bot: TinyBot) -> None:
    sent = await channel_of(bot).send("soon gone")
    await sent.edit(content="edited once")
    fake.delete_message(CHANNEL, sent.id)
    with pytest.raises(discord.NotFound) as excinfo:
        await sent.edit(content="edited twice")
    assert excinfo.value.code == 10008
    assert fake.message(sent.id).content == "edited once"


async def test_denied_channel_is_forbidden(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.deny_channel(CHANNEL)
    with pytest.raises(discord.Forbidden) as excinfo:
        await channel_of(bot).send("nope")
    assert excinfo.value.code == 50013
    fake.deny_channel(CHANNEL, code=50001)
    with pytest.raises(discord.Forbidden) as excinfo:
        await channel_of(bot).send("nope")
    assert excinfo.value.code == 50001


async def test_expired_interaction_token_is_401(fake: FakeDiscord, bot: TinyBot) -> None:
    rec = await fake.send_interaction(
        fake.slash_command_payload("hold", user_id=USER, guild_id=GUILD, channel_id=CHANNEL)
    )
    callback = await rec.wait_callback()
    assert callback == {"type": 5, "data": {"flags": 64}} and rec.original is not None and rec.original.ephemeral

    fake.expire_interaction_tokens()
    bot.release.set()
    exc = await asyncio.wait_for(bot.hold_result, 5)
    assert exc is not None and type(exc) is discord.HTTPException
    assert exc.status == 401 and exc.code == 50027


async def test_unreachable_then_gateway_resumes(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.set_unreachable(True)
    with pytest.raises(discord.DiscordServerError):
        await channel_of(bot).send("while down")
    await fake.wait_for(lambda: fake.gateway.refused_connections >= 1, timeout=5, what="a refused reconnect")

    fake.set_unreachable(False)
    await asyncio.wait_for(bot.resumed.wait(), 10)  # discord.py backs off 0-2 s before retrying
    (session,) = fake.gateway.live_sessions()
    assert session.resumes == 1 and fake.gateway.identify_count == 1

    view_rec = await fake.send_interaction(
        fake.slash_command_payload(
            "pick", user_id=USER, guild_id=GUILD, channel_id=CHANNEL, options={"flavour": "mint"}
        )
    )
    assert (await view_rec.wait_original()).content == "mint"


async def test_second_client_gets_its_own_session(fake: FakeDiscord, bot: TinyBot) -> None:
    other = TinyBot()
    task = asyncio.create_task(other.start(fake.token))
    try:
        await asyncio.wait_for(other.wait_until_ready(), 10)
        sessions = await fake.wait_until_connected(sessions=2)
        assert len({s.session_id for s in sessions}) == 2
        rec = await fake.send_interaction(
            fake.slash_command_payload(
                "pick", user_id=USER, guild_id=GUILD, channel_id=CHANNEL, options={"flavour": "x"}
            )
        )
        await rec.wait_original()
        await fake.wait_for(lambda: rec.rejected_callbacks, timeout=5, what="the second acknowledgement")
        assert len(rec.messages) == 1  # the slower client got 400 40060
    finally:
        await other.close()
        await asyncio.wait_for(task, 10)


SUBPROCESS_BOT = """
import asyncio, os, sys
import discord, yarl
from discord import app_commands

discord.http.Route.BASE = os.environ["DISCORD_API_BASE"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["DISCORD_GATEWAY_URL"])
client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
tree = app_commands.CommandTree(client)

@tree.command(description="pong")
async def ping(interaction: discord.Interaction) -> None:
    await interaction.response.send_message(f"pong from {os.getpid()}")

client.run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""


async def test_subprocess_client(fake: FakeDiscord) -> None:
    env = {
        **os.environ,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_TOKEN": fake.token,
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SUBPROCESS_BOT, env=env)
    try:
        await fake.wait_until_connected(timeout=15)
        rec = await fake.send_interaction(
            fake.slash_command_payload("ping", user_id=USER, guild_id=GUILD, channel_id=CHANNEL)
        )
        reply = await rec.wait_original()
        assert reply.content == f"pong from {proc.pid}"
    finally:
        proc.kill()
        await proc.wait()
