"""/status, /cancel, /mymodels and /forgetme: following, stopping, listing and deleting your jobs.

Another user's jobs are never shown: lookups go through `JobQueries.owned_job`, which answers
"not found" for a job that exists but is not the invoker's, exactly as for one that does not exist.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.jobs.provider_errors import ProviderError
from bot.render import job_card, job_list_embed, status_text
from cogs.access import is_manager, manager_label
from cogs.errors import report_error

if TYPE_CHECKING:
    from bot.discord_bot import LoraBot

log = logging.getLogger(__name__)

PAGE_SIZE = 10

Button = discord.ui.Button["discord.ui.View"]


async def job_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Only the invoker's jobs, newest first (Discord allows at most 25 choices)."""
    bot: LoraBot = interaction.client  # type: ignore[assignment]
    jobs = await bot.services.queries.search(interaction.user.id, current, limit=25)
    return [
        app_commands.Choice(name=f"#{job.id} {job.name} ({status_text(job)})"[:100], value=str(job.id)) for job in jobs
    ]


class ConfirmButton(
    discord.ui.DynamicItem[Button],
    template=r"lorabot:(?P<what>cancel|forget):(?P<answer>yes|no):(?P<user>\d+):(?P<job>\d+)",
):
    """Yes / No on a /cancel or /forgetme confirmation. Only the user who asked can answer."""

    def __init__(self, what: str, answer: str, user_id: int, job_id: int = 0) -> None:
        yes = answer == "yes"
        label = {"cancel": "Yes, cancel it", "forget": "Yes, delete everything"}[what] if yes else "No"
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.danger if yes else discord.ButtonStyle.secondary,
                custom_id=f"lorabot:{what}:{answer}:{user_id}:{job_id}",
            )
        )
        self.what, self.answer, self.user_id, self.job_id = what, answer, user_id, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ConfirmButton:
        return cls(match["what"], match["answer"], int(match["user"]), int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("This button isn't for you.", ephemeral=True)
            return
        if self.answer == "no":
            await interaction.response.edit_message(content="OK, nothing was changed.", embed=None, view=None)
            return
        cog = interaction.client.get_cog("Jobs")  # type: ignore[attr-defined]
        assert isinstance(cog, Jobs)
        await interaction.response.defer()
        try:
            message = await (
                cog.confirm_cancel(interaction, self.job_id)
                if self.what == "cancel"
                else cog.confirm_forget(interaction)
            )
        except Exception as error:
            await report_error(interaction, error)
            return
        await interaction.edit_original_response(content=message, embed=None, view=None)


def confirm_view(what: str, user_id: int, job_id: int = 0) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ConfirmButton(what, "yes", user_id, job_id))
    view.add_item(ConfirmButton(what, "no", user_id, job_id))
    return view


class PageButton(
    discord.ui.DynamicItem[Button], template=r"lorabot:models:(?P<user>\d+):(?P<page>\d+):(?P<dir>prev|next)"
):
    """Previous / Next on /mymodels. Stateless, so it keeps working after a restart."""

    def __init__(self, user_id: int, page: int, direction: str, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="Previous" if direction == "prev" else "Next",
                style=discord.ButtonStyle.secondary,
                custom_id=f"lorabot:models:{user_id}:{page}:{direction}",
                disabled=disabled,
            )
        )
        self.user_id, self.page = user_id, page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PageButton:
        return cls(int(match["user"]), int(match["page"]), match["dir"])

    async def callback(self, interaction: discord.Interaction) -> None:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("These aren't your trainings.", ephemeral=True)
            return
        cog = interaction.client.get_cog("Jobs")  # type: ignore[attr-defined]
        assert isinstance(cog, Jobs)
        try:
            embed, view = await cog.models_page(self.user_id, self.page)
            await interaction.response.edit_message(embed=embed, view=view)
        except Exception as error:
            await report_error(interaction, error)


class Jobs(commands.Cog):
    def __init__(self, bot: LoraBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ConfirmButton, PageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ConfirmButton, PageButton)

    # -- /status ----------------------------------------------------------------------------------

    @app_commands.command(name="status", description="Show one of your trainings (default: the latest)")
    @app_commands.describe(job="Which training (start typing to search yours)")
    @app_commands.autocomplete(job=job_autocomplete)
    async def status(self, interaction: discord.Interaction, job: str | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        queries = self.bot.services.queries
        found = await queries.owned_job(interaction.user.id, job)
        embed = job_card(found, await queries.timeline(found), simulated=self.bot.services.settings.simulated)
        try:
            live = await queries.live_status(found)
        except ProviderError as error:
            embed.add_field(name="Live status", value=f"Unavailable right now ({error.user_message})", inline=False)
        else:
            if live is not None:
                lines = "\n".join(live.log_lines[-5:]) or "-"
                value = f"Provider says `{live.status}`" + (f", ETA {live.eta}" if live.eta else "") + f"\n{lines}"
                embed.add_field(name="Live status", value=value[:1024], inline=False)
        await interaction.edit_original_response(embed=embed)

    # -- /cancel ----------------------------------------------------------------------------------

    @app_commands.command(name="cancel", description="Cancel one of your trainings (default: the latest)")
    @app_commands.describe(job="Which training (start typing to search yours)")
    @app_commands.autocomplete(job=job_autocomplete)
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        manager_guild = interaction.guild_id if is_manager(interaction) else None
        found = await self.bot.services.queries.owned_job(interaction.user.id, job, manager_guild=manager_guild)
        if found.state.is_terminal:
            raise UserError(
                f"Job #{found.id} has already finished ({found.state.label.lower()}) and can't be cancelled."
            )
        await interaction.response.send_message(
            f"Cancel training #{found.id} **{found.name}** ({status_text(found)})? This can't be undone.",
            view=confirm_view("cancel", interaction.user.id, found.id),
            ephemeral=True,
        )

    async def confirm_cancel(self, interaction: discord.Interaction, job_id: int) -> str:
        manager_guild = interaction.guild_id if is_manager(interaction) else None
        job = await self.bot.services.queries.owned_job(interaction.user.id, str(job_id), manager_guild=manager_guild)
        by = manager_label(interaction) if manager_guild is not None else None  # unused when it is the owner
        job = await self.bot.services.jobs.cancel(job, by_user_id=interaction.user.id, by=by)
        return f"Training #{job.id} **{job.name}** is cancelled."

    # -- /mymodels --------------------------------------------------------------------------------

    @app_commands.command(name="mymodels", description="List your trainings, newest first")
    async def mymodels(self, interaction: discord.Interaction) -> None:
        embed, view = await self.models_page(interaction.user.id, 0)
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True)

    async def models_page(self, user_id: int, page: int) -> tuple[discord.Embed, discord.ui.View]:
        found = await self.bot.services.queries.page(user_id, page, size=PAGE_SIZE)
        view = discord.ui.View(timeout=None)
        view.add_item(PageButton(user_id, max(found.page - 1, 0), "prev", disabled=found.page == 0))
        view.add_item(PageButton(user_id, found.page + 1, "next", disabled=found.page >= found.pages - 1))
        pictures = await self.bot.services.generations.pictures_per_model([job.id for job in found.jobs])
        embed = job_list_embed(found.jobs, page=found.page, pages=found.pages, total=found.total, pictures=pictures)
        return embed, view

    # -- /forgetme --------------------------------------------------------------------------------

    @app_commands.command(name="forgetme", description="Delete all your trainings and everything stored about you")
    async def forgetme(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "Delete all your trainings and everything I store about you? Running trainings are cancelled and "
            "your trained models are deleted from the provider first, so they can't be used any more. "
            "This can't be undone.",
            view=confirm_view("forget", interaction.user.id),
            ephemeral=True,
        )

    async def confirm_forget(self, interaction: discord.Interaction) -> str:
        deleted = await self.bot.services.jobs.forget_user(interaction.user.id)
        return f"Done: {deleted} training record(s), their models on the provider and your settings were deleted."


async def setup(bot: LoraBot) -> None:
    await bot.add_cog(Jobs(bot))
