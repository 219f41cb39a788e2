"""Who is asking, and where the bot may post: shared by the cogs that check either."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.jobs.limits import Requester


class ManagersOnly(app_commands.CheckFailure):
    """A member without Manage Server reached a managers' command (a server's command-permission
    overrides can show it to anyone)."""

    def __init__(self) -> None:
        super().__init__("Only members with the Manage Server permission can use /lora-admin.")


def requester(interaction: discord.Interaction) -> Requester:
    """The member behind an interaction, with what the server's role lists and limits look at."""
    member = interaction.user if isinstance(interaction.user, discord.Member) else None
    return Requester(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        role_ids=[role.id for role in member.roles] if member else [],
        manages_guild=is_manager(interaction),
    )


def is_manager(interaction: discord.Interaction) -> bool:
    """Has Manage Server in this server, as Discord computed it for this very interaction (an
    administrator, and the server's owner, have every permission)."""
    if interaction.guild_id is None:
        return False
    permissions = interaction.permissions
    if permissions.manage_guild or permissions.administrator:
        return True
    return interaction.guild is not None and interaction.guild.owner_id == interaction.user.id


def manager_label(interaction: discord.Interaction) -> str:
    """How a job's record and its owner's DM name the manager who cancelled it."""
    guild = interaction.guild.name if interaction.guild is not None else f"server {interaction.guild_id}"
    return f"{interaction.user.display_name} (<@{interaction.user.id}>), a manager of {guild}"


def can_post_with(permissions: discord.Permissions, *, in_thread: bool) -> bool:
    """Do these permissions let the bot post a card (an embed with files) there?"""
    can_send = permissions.send_messages_in_threads if in_thread else permissions.send_messages
    return bool(permissions.view_channel and can_send and permissions.attach_files and permissions.embed_links)


def bot_can_post(interaction: discord.Interaction) -> bool:
    """Can the bot post the card (with files) where the interaction happened, with its own token?"""
    if interaction.guild_id is None:
        return True  # a DM with the bot
    return can_post_with(interaction.app_permissions, in_thread=isinstance(interaction.channel, discord.Thread))


async def bot_can_post_in(guild: discord.Guild, channel_id: int, bot_id: int | None) -> bool:
    """Can the bot post a card in this channel of the server (its roles and the channel's
    overwrites, from the gateway's cache)? False for a channel it cannot see or that is gone."""
    channel = guild.get_channel_or_thread(channel_id)
    if not isinstance(channel, discord.TextChannel | discord.Thread | discord.VoiceChannel | discord.StageChannel):
        return False
    # discord.py types `me` as always there; it is None until the bot's own member is cached.
    me: discord.Member | None = guild.me
    if me is None and bot_id is not None:  # ask for the bot's own member (no privileged intent needed)
        try:
            me = await guild.fetch_member(bot_id)
        except discord.HTTPException:
            return False
    if me is None:
        return False
    return can_post_with(channel.permissions_for(me), in_thread=isinstance(channel, discord.Thread))
