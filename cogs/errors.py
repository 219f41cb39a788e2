"""The one error handler: domain errors become short ephemeral messages, the rest a reference id."""

from __future__ import annotations

import logging
import uuid

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.jobs.limits import LimitReached
from bot.jobs.provider_errors import ProviderError
from cogs.access import ManagersOnly

log = logging.getLogger(__name__)


def user_message(error: BaseException) -> str | None:
    """The message for an error the user can act on, or None for an unexpected one."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, LimitReached):
        return error.message
    if isinstance(error, ProviderError):
        return error.user_message
    if isinstance(error, ManagersOnly):
        return str(error)
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    if isinstance(error, app_commands.TransformerError | app_commands.CommandSignatureMismatch):
        return "That option value isn't valid; please check it and try again."
    return None


async def reply(interaction: discord.Interaction, message: str) -> None:
    """Answer ephemerally whether or not the interaction was already acknowledged."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException as error:  # the token may have expired; nothing more to do
        log.info("could not tell the user about an error (%s %s)", error.status, error.code)


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user what went wrong; log unexpected errors with a reference id and traceback."""
    message = user_message(error)
    if message is None:
        reference = uuid.uuid4().hex[:8]
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error(
            "unexpected error %s in %s by user %s",
            reference,
            interaction.command.qualified_name if interaction.command else interaction.data,
            interaction.user.id,
            exc_info=(type(original), original, original.__traceback__),
        )
        message = (
            f"Sorry, something went wrong on my side. If it keeps happening, tell the server admins: `{reference}`"
        )
    await reply(interaction, message)


class ErrorHandler(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, error)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ErrorHandler(bot))
