"""The fake Discord's channel, role and mentionable options, roles, the bot leaving a guild (and outages) and
what registered commands keep of their permissions, driving a tiny real discord.py bot with a /lora-admin group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.discord_standin import FakeDiscord, GatewaySession, pointed_at

GUILD = 920_000_000_000_000_001
CHANNEL = 920_000_000_000_000_002
USER = 920_000_000_000_000_003
THREAD = 920_000_000_000_000_004
VOICE = 920_000_000_000_000_005
OTHER_GUILD = 920_000_000_000_000_011
OTHER_CHANNEL = 920_000_000_000_000_012

MANAGE_GUILD = discord.Permissions(manage_guild=True).value
MANAGE_MESSAGES = discord.Permissions(manage_messages=True).value
INTENT_GUILD_MEMBERS = 1 << 1
#: The fields api-docs lists for a resolved partial channel, plus the invoking member's ``permissions``.
PARTIAL_CHANNEL_KEYS = {
    "id",
    "name",
    "type",
    "permissions",
    "last_message_id",
    "last_pin_timestamp",
    "nsfw",
    "parent_id",
    "guild_id",
    "flags",
    "rate_limit_per_user",
    "topic",
    "position",
}


# ---------------------------------------------------------------------------------------------------------------
# A tiny bot: /lora-admin announce|grant|limits set, and a global /status
# ---------------------------------------------------------------------------------------------------------------


def record(interaction: discord.Interaction, **params: Any) -> None:
    client = interaction.client
    assert isinstance(client, AdminBot)
    client.seen.append((interaction, params))


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class LoraAdmin(app_commands.Group, name="lora-admin", description="Server settings"):
    limits = app_commands.Group(name="limits", description="Per-role limits")

    @app_commands.command(description="Where announcements go")
    async def announce(
        self,
        interaction: discord.Interaction,
        channel: app_commands.AppCommandChannel | app_commands.AppCommandThread,
    ) -> None:
        record(interaction, channel=channel)
        await interaction.response.send_message("ok", ephemeral=True)

    @app_commands.command(description="Who may train")
    async def grant(self, interaction: discord.Interaction, role: discord.Role) -> None:
        record(interaction, role=role)
        await interaction.response.send_message("ok", ephemeral=True)

    @limits.command(name="set", description="Set a role's limit in a channel")
    async def limits_set(
        self, interaction: discord.Interaction, channel: discord.TextChannel, role: discord.Role
    ) -> None:
        record(interaction, channel=channel, role=role)
        await interaction.response.send_message("ok", ephemeral=True)


@app_commands.command(description="Bot status")
@app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
async def status(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("fine")


class AdminBot(commands.Bot):
    def __init__(self, **options: Any) -> None:
        options.setdefault("intents", discord.Intents.default())
        super().__init__(command_prefix="!", guild_ready_timeout=0.05, **options)
        self.seen: list[tuple[discord.Interaction, dict[str, Any]]] = []
        self.guild_events: list[tuple[str, int]] = []

    async def setup_hook(self) -> None:
        self.tree.add_command(LoraAdmin())
        self.tree.add_command(status)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        self.guild_events.append(("remove", guild.id))

    async def on_guild_join(self, guild: discord.Guild) -> None:
        self.guild_events.append(("join", guild.id))

    async def on_guild_unavailable(self, guild: discord.Guild) -> None:
        self.guild_events.append(("unavailable", guild.id))

    async def on_guild_available(self, guild: discord.Guild) -> None:
        self.guild_events.append(("available", guild.id))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        server.add_guild(GUILD, name="Fake guild", channels={CHANNEL: "general"})
        server.add_user(USER, username="alice")
        server.set_member(GUILD, USER)
        yield server
        assert server.errors == []


async def start_bot(fake: FakeDiscord, running: list[tuple[AdminBot, asyncio.Task[None]]], **options: Any) -> AdminBot:
    client = AdminBot(**options)
    task = asyncio.create_task(client.start(fake.token))
    running.append((client, task))
    await asyncio.wait_for(client.wait_until_ready(), 10)
    return client


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[AdminBot]:
    """The bot, its commands synced to GUILD."""
    running: list[tuple[AdminBot, asyncio.Task[None]]] = []
    with pointed_at(fake):
        try:
            client = await start_bot(fake, running)
            client.tree.copy_global_to(guild=discord.Object(GUILD))
            await client.tree.sync(guild=discord.Object(GUILD))
            yield client
        finally:
            for client, task in running:
                await client.close()
                await asyncio.wait_for(task, 10)


def session_of(fake: FakeDiscord) -> GatewaySession:
    (session,) = fake.gateway.live_sessions()
    return session


def dispatched(session: GatewaySession, event: str) -> list[dict[str, Any]]:
    return [frame["d"] for _seq, frame in session.backlog if frame["t"] == event]


async def invoke(fake: FakeDiscord, bot: AdminBot, options: Any, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    """Send /lora-admin with ``options``; (the payload, what the command received)."""
    payload = fake.slash_command_payload(
        "lora-admin", user_id=USER, guild_id=GUILD, channel_id=CHANNEL, options=options, **kwargs
    )
    before = len(bot.seen)
    rec = await fake.send_interaction(payload)
    assert (await rec.wait_original()).content == "ok"
    assert len(bot.seen) == before + 1
    return payload, bot.seen[-1]


# ---------------------------------------------------------------------------------------------------------------
# Channel, role and mentionable options
# ---------------------------------------------------------------------------------------------------------------


async def test_a_channel_option_resolves_to_an_app_command_channel(fake: FakeDiscord, bot: AdminBot) -> None:
    fake.add_member_roles(GUILD, USER, fake.add_role(GUILD, name="Mods", permissions=MANAGE_MESSAGES).id)
    payload, (interaction, got) = await invoke(fake, bot, {"announce": {"channel": CHANNEL}})

    member_perms = fake.guilds[GUILD].member_permissions(USER)
    assert member_perms & MANAGE_MESSAGES and payload["member"]["permissions"] == str(member_perms)
    data = payload["data"]
    channel_option = {"name": "channel", "type": 7, "value": str(CHANNEL)}  # the type comes from the schema
    assert data["options"] == [{"name": "announce", "type": 1, "options": [channel_option]}]
    partial = data["resolved"]["channels"][str(CHANNEL)]
    assert set(partial) == PARTIAL_CHANNEL_KEYS
    assert (partial["name"], partial["type"], partial["permissions"]) == ("general", 0, str(member_perms))

    channel = got["channel"]
    assert type(channel) is app_commands.AppCommandChannel
    assert (channel.id, channel.name, channel.type, channel.guild_id) == (
        CHANNEL,
        "general",
        discord.ChannelType.text,
        GUILD,
    )
    assert channel.permissions.value == member_perms and channel.permissions.manage_messages
    assert channel.resolve() is bot.get_channel(CHANNEL)
    assert interaction.namespace.channel == channel


async def test_a_thread_option_resolves_to_an_app_command_thread(fake: FakeDiscord, bot: AdminBot) -> None:
    fake.add_channel(GUILD, THREAD, name="ideas", type=11, parent_id=CHANNEL)
    guild = bot.get_guild(GUILD)
    assert guild is not None
    thread = await fake.wait_for(lambda: guild.get_thread(THREAD), 5, "THREAD_CREATE on the client")
    assert thread.parent_id == CHANNEL and thread.owner_id == fake.guilds[GUILD].owner_id

    payload, (_, got) = await invoke(fake, bot, {"announce": {"channel": THREAD}})
    partial = payload["data"]["resolved"]["channels"][str(THREAD)]
    assert set(partial) >= PARTIAL_CHANNEL_KEYS - {"topic", "position", "nsfw"} | {"thread_metadata"}
    resolved = got["channel"]
    assert type(resolved) is app_commands.AppCommandThread
    assert (resolved.id, resolved.name, resolved.parent_id, resolved.archived) == (THREAD, "ideas", CHANNEL, False)
    assert resolved.resolve() is thread


async def test_a_role_option_resolves_to_a_role(fake: FakeDiscord, bot: AdminBot) -> None:
    role = fake.add_role(GUILD, name="Trainers", permissions=MANAGE_MESSAGES)
    payload, (_, got) = await invoke(fake, bot, {"grant": {"role": role.id}})

    data = payload["data"]
    assert data["options"] == [
        {"name": "grant", "type": 1, "options": [{"name": "role", "type": 8, "value": str(role.id)}]}
    ]
    assert data["resolved"] == {"roles": {str(role.id): role.to_payload()}}
    received = got["role"]
    assert type(received) is discord.Role
    assert (received.id, received.name, received.permissions.value, received.guild.id) == (
        role.id,
        "Trainers",
        MANAGE_MESSAGES,
        GUILD,
    )


async def test_options_of_a_subcommand_group_are_resolved_with_schema_types(fake: FakeDiscord, bot: AdminBot) -> None:
    role = fake.add_role(GUILD, name="Trainers")
    mapping = {"limits": {"set": {"channel": CHANNEL, "role": role.id}}}
    payload, (_, got) = await invoke(fake, bot, mapping)

    (group,) = payload["data"]["options"]
    assert (group["name"], group["type"]) == ("limits", 2)
    (sub,) = group["options"]
    assert (sub["name"], sub["type"]) == ("set", 1)
    assert [(o["name"], o["type"], o["value"]) for o in sub["options"]] == [
        ("channel", 7, str(CHANNEL)),
        ("role", 8, str(role.id)),
    ]
    assert set(payload["data"]["resolved"]) == {"channels", "roles"}
    assert got["channel"] is bot.get_channel(CHANNEL) and isinstance(got["channel"], discord.TextChannel)
    assert isinstance(got["role"], discord.Role) and got["role"].id == role.id

    # Raw dicts without types, with a mapping inside, build the same options.
    raw = [{"name": "limits", "options": [{"name": "set", "options": {"channel": CHANNEL, "role": role.id}}]}]
    again = fake.slash_command_payload("lora-admin", user_id=USER, guild_id=GUILD, channel_id=CHANNEL, options=raw)
    assert again["data"]["options"] == payload["data"]["options"]
    assert again["data"]["resolved"] == payload["data"]["resolved"]


async def test_a_channel_outside_the_options_channel_types_or_guild_is_refused(
    fake: FakeDiscord, bot: AdminBot
) -> None:
    fake.add_channel(GUILD, VOICE, name="voice", type=2)
    registered = next(c for c in fake.commands(GUILD) if c["name"] == "lora-admin")
    limits = next(o for o in registered["options"] if o["name"] == "limits")
    assert limits["options"][0]["options"][0]["channel_types"] == [0, 5]  # discord.TextChannel: text, news

    with pytest.raises(ValueError, match="type 2"):
        fake.slash_command_payload(
            "lora-admin",
            user_id=USER,
            guild_id=GUILD,
            channel_id=CHANNEL,
            options={"limits": {"set": {"channel": VOICE, "role": GUILD}}},
        )
    fake.add_guild(OTHER_GUILD, channels={OTHER_CHANNEL: "elsewhere"})
    with pytest.raises(ValueError, match="not in guild"):
        fake.slash_command_payload(
            "lora-admin",
            user_id=USER,
            guild_id=GUILD,
            channel_id=CHANNEL,
            options={"announce": {"channel": OTHER_CHANNEL}},
        )


async def test_unknown_role_and_channel_ids_are_created_like_set_member_does(fake: FakeDiscord, bot: AdminBot) -> None:
    new_role, new_channel = 920_000_000_000_000_021, 920_000_000_000_000_022
    _, (_, got) = await invoke(fake, bot, {"grant": {"role": new_role}})
    assert got["role"].name == f"role-{new_role}" and fake.guilds[GUILD].roles[new_role].permissions == 0
    guild = bot.get_guild(GUILD)
    assert guild is not None and guild.get_role(new_role) is not None  # GUILD_ROLE_CREATE came first

    _, (_, got) = await invoke(fake, bot, {"announce": {"channel": new_channel}})
    assert got["channel"].id == new_channel and fake.channels[new_channel].guild_id == GUILD


async def test_option_types_without_a_schema(fake: FakeDiscord) -> None:
    """Nothing registered: FakeChannel and FakeRole values say what they are, mentionables resolve by id."""
    role = fake.add_role(GUILD, name="Trainers")
    channel = fake.channels[CHANNEL]
    payload = fake.slash_command_payload(
        "anything",
        user_id=USER,
        guild_id=GUILD,
        channel_id=CHANNEL,
        options={"where": channel, "who": role, "count": 3, "sub": {"inner": channel}},
    )
    options = payload["data"]["options"]
    assert [(o["name"], o["type"]) for o in options] == [("where", 7), ("who", 8), ("count", 4), ("sub", 1)]
    assert options[3]["options"] == [{"name": "inner", "type": 7, "value": str(CHANNEL)}]
    assert set(payload["data"]["resolved"]) == {"channels", "roles"}

    mentions = [{"name": "a", "type": 9, "value": role.id}, {"name": "b", "type": 9, "value": USER}]
    resolved = fake.slash_command_payload(
        "anything", user_id=USER, guild_id=GUILD, channel_id=CHANNEL, options=mentions
    )["data"]["resolved"]
    assert set(resolved) == {"roles", "users", "members"}
    assert list(resolved["roles"]) == [str(role.id)] and list(resolved["users"]) == [str(USER)]

    dm = fake.dm_channel_id(USER)
    with pytest.raises(ValueError, match="need a guild"):
        fake.slash_command_payload("anything", user_id=USER, guild_id=None, channel_id=dm, options={"where": channel})


# ---------------------------------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------------------------------


async def test_add_role_and_member_roles_change_what_the_bot_sees(fake: FakeDiscord, bot: AdminBot) -> None:
    guild = bot.get_guild(GUILD)
    assert guild is not None
    role = fake.add_role(GUILD, name="Managers", permissions=MANAGE_GUILD)
    seen = await fake.wait_for(lambda: guild.get_role(role.id), 5, "GUILD_ROLE_CREATE on the client")
    assert (seen.name, seen.permissions.value) == ("Managers", MANAGE_GUILD)
    with pytest.raises(ValueError, match="already exists"):
        fake.add_role(GUILD, role.id, name="again")

    _, (before, _) = await invoke(fake, bot, {"grant": {"role": role.id}})
    assert not before.permissions.manage_guild

    member = fake.add_member_roles(GUILD, USER, role.id)
    assert member.roles.count(role.id) == 1 and fake.add_member_roles(GUILD, USER, role.id).roles == member.roles
    payload, (after, _) = await invoke(fake, bot, {"grant": {"role": role.id}})
    assert str(role.id) in payload["member"]["roles"]
    assert after.permissions.manage_guild and isinstance(after.user, discord.Member)
    assert [r.id for r in after.user.roles if r.id != GUILD] == [role.id]
    assert dispatched(session_of(fake), "GUILD_MEMBER_UPDATE") == []  # no GUILD_MEMBERS intent

    fake.remove_member_roles(GUILD, USER, role.id)
    _, (removed, _) = await invoke(fake, bot, {"grant": {"role": role.id}})
    assert not removed.permissions.manage_guild

    with pytest.raises(ValueError, match="set_member"):
        fake.add_member_roles(GUILD, 920_000_000_000_000_099, role.id)


async def test_set_member_still_creates_unknown_roles(fake: FakeDiscord, bot: AdminBot) -> None:
    other, new_role = 920_000_000_000_000_031, 920_000_000_000_000_032
    member = fake.set_member(GUILD, other, roles=[new_role], permissions=MANAGE_MESSAGES)
    guild = bot.get_guild(GUILD)
    assert guild is not None
    await fake.wait_for(lambda: guild.get_role(new_role), 5, "the set_member role on the client")
    assert member.roles[0] == new_role and len(member.roles) == 2  # and the role holding its permissions
    assert fake.guilds[GUILD].member_permissions(other) == MANAGE_MESSAGES


async def test_member_roles_are_dispatched_with_the_guild_members_intent() -> None:
    async with FakeDiscord(enabled_privileged_intents=INTENT_GUILD_MEMBERS) as fake:
        fake.add_guild(GUILD, channels={CHANNEL: "general"})
        fake.set_member(GUILD, USER)
        intents = discord.Intents.default()
        intents.members = True
        running: list[tuple[AdminBot, asyncio.Task[None]]] = []
        with pointed_at(fake):
            try:
                client = await start_bot(fake, running, intents=intents, chunk_guilds_at_startup=False)
                role = fake.add_role(GUILD, name="Trainers")
                fake.add_member_roles(GUILD, USER, role.id)
                guild = client.get_guild(GUILD)
                assert guild is not None

                def has_role() -> bool:
                    member = guild.get_member(USER)
                    return member is not None and any(r.id == role.id for r in member.roles)

                await fake.wait_for(has_role, 5, "GUILD_MEMBER_UPDATE on the client")
                (update,) = dispatched(session_of(fake), "GUILD_MEMBER_UPDATE")
                assert update["guild_id"] == str(GUILD) and update["roles"] == [str(role.id)]
            finally:
                for running_client, task in running:
                    await running_client.close()
                    await asyncio.wait_for(task, 10)
        assert fake.errors == []


# ---------------------------------------------------------------------------------------------------------------
# The bot leaving a guild, and outages
# ---------------------------------------------------------------------------------------------------------------


async def test_removing_the_bot_from_a_guild_and_adding_it_again(fake: FakeDiscord, bot: AdminBot) -> None:
    fake.add_guild(OTHER_GUILD, name="Other", channels={OTHER_CHANNEL: "elsewhere"})
    await fake.wait_for(lambda: ("join", OTHER_GUILD) in bot.guild_events, 5, "on_guild_join")
    joined = dispatched(session_of(fake), "GUILD_CREATE")[-1]
    assert joined["id"] == str(OTHER_GUILD) and "unavailable" not in joined  # a join, not a backfill
    await bot.tree.sync(guild=discord.Object(OTHER_GUILD))

    removed = fake.remove_guild(OTHER_GUILD)
    assert removed.id == OTHER_GUILD and OTHER_GUILD not in fake.guilds
    await fake.wait_for(lambda: ("remove", OTHER_GUILD) in bot.guild_events, 5, "on_guild_remove")
    assert bot.get_guild(OTHER_GUILD) is None and bot.get_guild(GUILD) is not None
    assert dispatched(session_of(fake), "GUILD_DELETE") == [{"id": str(OTHER_GUILD)}]  # no "unavailable"

    with pytest.raises(discord.Forbidden) as sent:
        await bot.get_partial_messageable(OTHER_CHANNEL).send("still here?")
    assert sent.value.code == 50001
    with pytest.raises(discord.Forbidden):
        await bot.fetch_guild(OTHER_GUILD)
    with pytest.raises(discord.Forbidden):
        await bot.tree.sync(guild=discord.Object(OTHER_GUILD))
    with pytest.raises(ValueError, match="unknown guild"):
        fake.slash_command_payload("lora-admin", user_id=USER, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL)

    fake.add_guild(OTHER_GUILD, name="Other again", channels={OTHER_CHANNEL: "elsewhere"})
    await fake.wait_for(lambda: bot.guild_events.count(("join", OTHER_GUILD)) == 2, 5, "on_guild_join again")
    guild = bot.get_guild(OTHER_GUILD)
    assert guild is not None and guild.name == "Other again"
    creates = [g["id"] for g in dispatched(session_of(fake), "GUILD_CREATE")]
    assert creates.count(str(OTHER_GUILD)) == 2
    await bot.get_partial_messageable(OTHER_CHANNEL).send("back")
    assert [m.content for m in fake.channel_messages(OTHER_CHANNEL)] == ["back"]


async def test_a_guild_outage_is_not_a_removal(fake: FakeDiscord, bot: AdminBot) -> None:
    bot.guild_events.clear()  # discord.py reports every guild of READY as available
    fake.guild_outage(GUILD)
    await fake.wait_for(lambda: ("unavailable", GUILD) in bot.guild_events, 5, "on_guild_unavailable")
    guild = bot.get_guild(GUILD)
    assert guild is not None and guild.unavailable and GUILD in fake.guilds
    assert dispatched(session_of(fake), "GUILD_DELETE") == [{"id": str(GUILD), "unavailable": True}]
    assert ("remove", GUILD) not in bot.guild_events

    first = session_of(fake)
    running: list[tuple[AdminBot, asyncio.Task[None]]] = []
    with pointed_at(fake):
        try:
            late = await start_bot(fake, running)  # IDENTIFYs during the outage
            late_session = next(s for s in fake.gateway.live_sessions() if s is not first)
            (ready,) = dispatched(late_session, "READY")
            assert ready["guilds"] == [{"id": str(GUILD), "unavailable": True}]
            assert dispatched(late_session, "GUILD_CREATE") == []
            assert late.get_guild(GUILD) is None or late.get_guild(GUILD).unavailable  # type: ignore[union-attr]
        finally:
            for client, task in running:
                await client.close()
                await asyncio.wait_for(task, 10)

    fake.end_guild_outage(GUILD)
    await fake.wait_for(lambda: ("available", GUILD) in bot.guild_events, 5, "on_guild_available")
    assert not guild.unavailable


# ---------------------------------------------------------------------------------------------------------------
# What registered commands keep
# ---------------------------------------------------------------------------------------------------------------


async def test_registered_commands_keep_permissions_and_contexts_as_discord_returns_them(
    fake: FakeDiscord, bot: AdminBot
) -> None:
    guild_commands = {c["name"]: c for c in fake.commands(GUILD)}
    admin = guild_commands["lora-admin"]
    assert admin["default_member_permissions"] == str(MANAGE_GUILD)  # discord.py sent an int
    assert admin["contexts"] == [0] and "dm_permission" not in admin  # dm_permission: global commands only
    assert guild_commands["status"]["default_member_permissions"] is None
    assert guild_commands["status"]["contexts"] == [0, 1]

    synced = {c.name: c for c in await bot.tree.sync()}
    global_commands = {c["name"]: c for c in fake.commands(None)}
    assert global_commands["lora-admin"]["dm_permission"] is False
    assert global_commands["status"]["dm_permission"] is True
    assert global_commands["lora-admin"]["default_member_permissions"] == str(MANAGE_GUILD)
    assert synced["lora-admin"].default_member_permissions == discord.Permissions(manage_guild=True)
    # (discord.py 2.7's AppCommand reads `contexts` one bit off, so assert them on the stored command only.)
    fetched = {c.name: c for c in await bot.tree.fetch_commands(guild=discord.Object(GUILD))}
    assert fetched["lora-admin"].default_member_permissions == discord.Permissions(manage_guild=True)
    assert fetched["status"].default_member_permissions is None

    body = [{"name": "bad", "description": "d", "default_member_permissions": "manage"}]
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.bulk_upsert_global_commands(fake.application_id, body)  # type: ignore[arg-type]
    assert refused.value.status == 400 and refused.value.code == 50035
    assert {c["name"] for c in fake.commands(None)} == {"lora-admin", "status"}


async def test_default_member_permissions_are_not_enforced_on_interactions(fake: FakeDiscord, bot: AdminBot) -> None:
    """Discord only hides such a command in the client; a guild's command-permission overrides can show it to
    anyone, so the bot must check for itself."""
    assert not fake.guilds[GUILD].member_permissions(USER) & MANAGE_GUILD
    role = fake.add_role(GUILD, name="Trainers")
    _, (interaction, got) = await invoke(fake, bot, {"grant": {"role": role.id}})
    assert not interaction.permissions.manage_guild and got["role"].id == role.id
