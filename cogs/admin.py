"""/lora-admin: a server's managers set how the bot works there (card channel, limits, roles,
safety), follow and cancel the server's trainings, and can have the server's settings forgotten.

Registered with Manage Server as its default permission, so Discord shows it to managers only;
a server can override that in its integration settings, so every use (and every button and menu
it shows) checks Manage Server again, as Discord computed it for that very interaction.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.jobs.server_settings import SPECS
from bot.render_settings import server_jobs_embed, settings_embed, updates_text
from cogs.access import ManagersOnly, bot_can_post_in, is_manager, manager_label
from cogs.errors import report_error

if TYPE_CHECKING:
    from bot.discord_bot import LoraBot

log = logging.getLogger(__name__)

Choice = app_commands.Choice
Button = discord.ui.Button["discord.ui.View"]
Select = discord.ui.Select["discord.ui.View"]
USES = [Choice(name="training (/train)", value="train"), Choice(name="pictures (/imagine)", value="generate")]
RESETTABLE = [Choice(name=spec.label, value=spec.key) for spec in SPECS] + [Choice(name="Everything", value="all")]


def check_manager(interaction: discord.Interaction, guild_id: int | None = None) -> int:
    """The server's id if the member manages it (and it is `guild_id`, when given); else refuse."""
    if interaction.guild_id is None or not is_manager(interaction):
        raise ManagersOnly
    if guild_id is not None and interaction.guild_id != guild_id:
        raise UserError("This belongs to another server's settings.")
    return interaction.guild_id


def guild_name(interaction: discord.Interaction) -> str:
    return interaction.guild.name if interaction.guild is not None else f"server {interaction.guild_id}"


class CancelPick(discord.ui.DynamicItem[Select], template=r"lorabot:admin:pick:(?P<guild>\d+)"):
    """The menu of the server's running trainings under /lora-admin jobs: picking one asks to confirm."""

    def __init__(self, guild_id: int, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"lorabot:admin:pick:{guild_id}",
                placeholder="Cancel a training...",
                options=options or [discord.SelectOption(label="-", value="0")],
            )
        )
        self.guild_id = guild_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelPick:
        return cls(int(match["guild"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            check_manager(interaction, self.guild_id)
            job_id = int(self.item.values[0])
            cog = interaction.client.get_cog("Admin")  # type: ignore[attr-defined]
            assert isinstance(cog, Admin)
            await cog.ask_to_cancel(interaction, job_id)
        except Exception as error:
            await report_error(interaction, error)


class AdminConfirm(
    discord.ui.DynamicItem[Button],
    template=r"lorabot:admin:(?P<what>cancel|forget):(?P<answer>yes|no):(?P<user>\d+):(?P<target>\d+)",
):
    """Yes / No on cancelling a server's training or forgetting the server's settings. Only the
    manager who asked can answer, and they must still manage the server."""

    def __init__(self, what: str, answer: str, user_id: int, target: int) -> None:
        yes = answer == "yes"
        label = {"cancel": "Yes, cancel it", "forget": "Yes, delete the settings"}[what] if yes else "No"
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.danger if yes else discord.ButtonStyle.secondary,
                custom_id=f"lorabot:admin:{what}:{answer}:{user_id}:{target}",
            )
        )
        self.what, self.answer, self.user_id, self.target = what, answer, user_id, target

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AdminConfirm:
        return cls(match["what"], match["answer"], int(match["user"]), int(match["target"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            if interaction.user.id != self.user_id:
                raise UserError("This button isn't for you.")
            if self.answer == "no":
                await interaction.response.edit_message(content="OK, nothing was changed.", embed=None, view=None)
                return
            cog = interaction.client.get_cog("Admin")  # type: ignore[attr-defined]
            assert isinstance(cog, Admin)
            guild_id = check_manager(interaction, self.target if self.what == "forget" else None)
            await interaction.response.defer()
            if self.what == "cancel":
                message = await cog.cancel_job(interaction, guild_id, self.target)
            else:
                message = await cog.forget_server(interaction, guild_id)
            await interaction.edit_original_response(content=message, embed=None, view=None)
        except Exception as error:
            await report_error(interaction, error)


def confirm_view(what: str, user_id: int, target: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(AdminConfirm(what, "yes", user_id, target))
    view.add_item(AdminConfirm(what, "no", user_id, target))
    return view


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class Admin(commands.GroupCog, group_name="lora-admin", group_description="Set how lorabot works on this server"):
    def __init__(self, bot: LoraBot) -> None:
        self.bot = bot
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(CancelPick, AdminConfirm)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(CancelPick, AdminConfirm)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """Every subcommand: Manage Server, checked again whatever the command's visibility."""
        check_manager(interaction)
        return True

    async def _change(self, interaction: discord.Interaction, changes: dict[str, Any]) -> None:
        guild_id = check_manager(interaction)
        updates = await self.bot.services.server_settings.change(guild_id, interaction.user.id, changes)
        await interaction.response.send_message(updates_text(updates), ephemeral=True)

    # -- show -----------------------------------------------------------------------------------------

    @app_commands.command(name="show", description="The settings in effect on this server, and where each comes from")
    async def show(self, interaction: discord.Interaction) -> None:
        guild_id = check_manager(interaction)
        settings = self.bot.services.server_settings
        policy = await settings.effective(guild_id)
        history = await settings.history(guild_id)
        await interaction.response.send_message(
            embed=settings_embed(guild_name(interaction), policy, history), ephemeral=True
        )

    # -- channel --------------------------------------------------------------------------------------

    @app_commands.command(name="channel", description="Where job cards are posted (default: where /train is used)")
    @app_commands.describe(
        channel="The channel for every job card of this server", reset="Post cards where /train is used again"
    )
    async def channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | discord.Thread | None = None,
        reset: bool = False,
    ) -> None:
        if (channel is None) == (not reset):
            raise UserError("Give either a channel, or reset: True to post cards where /train is used.")
        if channel is None:
            await self._change(interaction, {"card_channel_id": None})
            return
        guild = interaction.guild
        if guild is None or not await bot_can_post_in(guild, channel.id, self.bot.user.id if self.bot.user else None):
            raise UserError(
                f"I can't post job cards in <#{channel.id}>: I need View Channel, Send Messages, Embed Links and "
                "Attach Files there. Nothing was changed."
            )
        await self._change(interaction, {"card_channel_id": channel.id})

    # -- limits ---------------------------------------------------------------------------------------

    @app_commands.command(name="limits", description="Members' and the server's limits (0: no limit)")
    @app_commands.describe(
        running_per_member="Trainings a member may have running at once",
        trainings_per_member_per_day="Trainings a member may start in 24 hours",
        trainings_per_server_per_day="Trainings the whole server may start in 24 hours",
        pictures_per_member_per_day="Pictures a member may make in 24 hours",
        imagine_cooldown_seconds="Seconds a member waits between two /imagine",
    )
    async def limits(
        self,
        interaction: discord.Interaction,
        running_per_member: app_commands.Range[int, 0, 50] | None = None,
        trainings_per_member_per_day: app_commands.Range[int, 0, 1000] | None = None,
        trainings_per_server_per_day: app_commands.Range[int, 0, 10000] | None = None,
        pictures_per_member_per_day: app_commands.Range[int, 0, 10000] | None = None,
        imagine_cooldown_seconds: app_commands.Range[int, 0, 86400] | None = None,
    ) -> None:
        given = {
            "max_active_jobs_per_user": running_per_member,
            "max_trainings_per_user_per_day": trainings_per_member_per_day,
            "max_trainings_per_guild_per_day": trainings_per_server_per_day,
            "max_pictures_per_user_per_day": pictures_per_member_per_day,
            "imagine_cooldown_seconds": imagine_cooldown_seconds,
        }
        changes = {key: value for key, value in given.items() if value is not None}
        if not changes:
            raise UserError("Give at least one limit to change (0 means no limit). /lora-admin show lists them.")
        await self._change(interaction, changes)

    # -- roles ----------------------------------------------------------------------------------------

    @app_commands.command(name="roles", description="Who may train or make pictures, and whether managers skip limits")
    @app_commands.describe(
        use="Which list to change: training or pictures",
        add="A role to allow",
        remove="A role to take off the list",
        everyone="True: empty the list, so everyone may",
        managers_exempt="Whether members with Manage Server skip the role lists and the limits",
    )
    @app_commands.choices(use=USES)
    async def roles(
        self,
        interaction: discord.Interaction,
        use: str | None = None,
        add: discord.Role | None = None,
        remove: discord.Role | None = None,
        everyone: bool | None = None,
        managers_exempt: bool | None = None,
    ) -> None:
        guild_id = check_manager(interaction)
        changes: dict[str, Any] = {}
        if add is not None or remove is not None or everyone:
            if use is None:
                raise UserError("Say which list to change with `use` (training or pictures).")
            key = "train_role_ids" if use == "train" else "generate_role_ids"
            current = list((await self.bot.services.server_settings.effective(guild_id)).value(key))
            if everyone:
                current = []
            if add is not None and add.id not in current:
                if add.is_default():
                    raise UserError("@everyone is not a role to list: use everyone: True to let everyone.")
                current.append(add.id)
            if remove is not None:
                current = [role for role in current if role != remove.id]
            changes[key] = current
        if managers_exempt is not None:
            changes["limits_exempt_managers"] = managers_exempt
        if not changes:
            raise UserError("Give a role to add or remove, everyone: True, or managers_exempt.")
        await self._change(interaction, changes)

    # -- safety ---------------------------------------------------------------------------------------

    @app_commands.command(name="safety", description="Whether /imagine may turn the safety checker off")
    @app_commands.describe(
        off_in_age_restricted_channels="True: pictures made in age-restricted channels skip the safety checker"
    )
    async def safety(self, interaction: discord.Interaction, off_in_age_restricted_channels: bool) -> None:
        await self._change(interaction, {"safety_checker_off_in_nsfw_channels": off_in_age_restricted_channels})

    # -- reset ----------------------------------------------------------------------------------------

    @app_commands.command(name="reset", description="Put a setting (or every setting) back to the bot's default")
    @app_commands.describe(setting="Which setting")
    @app_commands.choices(setting=RESETTABLE)
    async def reset(self, interaction: discord.Interaction, setting: str) -> None:
        keys = [spec.key for spec in SPECS] if setting == "all" else [setting]
        await self._change(interaction, dict.fromkeys(keys))

    # -- jobs -----------------------------------------------------------------------------------------

    @app_commands.command(name="jobs", description="This server's running trainings and recent failures")
    async def jobs(self, interaction: discord.Interaction) -> None:
        guild_id = check_manager(interaction)
        active, failures = await self.bot.services.queries.server_jobs(guild_id)
        view = discord.ui.View(timeout=None)
        if active:
            options = [
                discord.SelectOption(label=f"#{job.id} {job.name}"[:100], value=str(job.id)) for job in active[:25]
            ]
            view.add_item(CancelPick(guild_id, options))
        await interaction.response.send_message(embed=server_jobs_embed(active, failures), view=view, ephemeral=True)

    async def ask_to_cancel(self, interaction: discord.Interaction, job_id: int) -> None:
        guild_id = check_manager(interaction)
        job = await self.bot.services.queries.owned_job(interaction.user.id, str(job_id), manager_guild=guild_id)
        if job.state.is_terminal:
            raise UserError(f"Training #{job.id} has already finished and can't be cancelled.")
        await interaction.response.send_message(
            f"Cancel training #{job.id} **{job.name}** of <@{job.owner_id}>? They will be told you cancelled it. "
            "This can't be undone.",
            view=confirm_view("cancel", interaction.user.id, job.id),
            ephemeral=True,
        )

    async def cancel_job(self, interaction: discord.Interaction, guild_id: int, job_id: int) -> str:
        services = self.bot.services
        job = await services.queries.owned_job(interaction.user.id, str(job_id), manager_guild=guild_id)
        manager = interaction.user.id
        job = await services.jobs.cancel(job, by_user_id=manager, by=manager_label(interaction))
        log.info("guild %s: manager %s cancelled job %s of member %s", guild_id, manager, job.id, job.owner_id)
        return f"Training #{job.id} **{job.name}** is cancelled; <@{job.owner_id}> is told you cancelled it."

    # -- forget-server --------------------------------------------------------------------------------

    @app_commands.command(name="forget-server", description="Delete every setting this server has stored")
    async def forget_server_command(self, interaction: discord.Interaction) -> None:
        guild_id = check_manager(interaction)
        await interaction.response.send_message(
            "Delete this server's lorabot settings and their history? Everything goes back to the bot's defaults. "
            "Members' own trainings are theirs and stay (each can delete theirs with /forgetme).",
            view=confirm_view("forget", interaction.user.id, guild_id),
            ephemeral=True,
        )

    async def forget_server(self, interaction: discord.Interaction, guild_id: int) -> str:
        deleted = await self.bot.services.server_settings.forget(guild_id, interaction.user.id)
        if not deleted:
            return "This server had no settings of its own; nothing was stored."
        return "Done: this server's settings and their history are deleted; the bot's defaults apply."


async def setup(bot: LoraBot) -> None:
    await bot.add_cog(Admin(bot))
