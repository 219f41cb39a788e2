"""/imagine, and the Generate and Again buttons: pictures made with a member's trained LoRA.

The cog only asks the generation service; the pictures are posted by the outbox (as a channel
message with the bot token, so they survive the interaction's 15-minute token and a restart).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.generation_model import Generation, GenerationState
from bot.jobs.generations import Destination, ImagineOptions
from bot.jobs.model import Job
from bot.render import AGAIN_BUTTON_ID, GENERATE_BUTTON_ID
from cogs.access import bot_can_post, requester
from cogs.errors import report_error

if TYPE_CHECKING:
    from bot.discord_bot import LoraBot

log = logging.getLogger(__name__)

Button = discord.ui.Button["discord.ui.View"]
#: How long the ephemeral note follows a generation (interaction tokens last 15 minutes).
WATCH_SECONDS = 14 * 60
WATCH_EVERY = 2.0


def _template(button_id: str, group: str) -> str:
    return re.escape(button_id.split("{", 1)[0]) + rf"(?P<{group}>\d+)"


def destination(interaction: discord.Interaction) -> Destination:
    """Results go where the member asked, if the bot can post there; else to their DMs."""
    channel = interaction.channel
    if interaction.guild_id is None or channel is None or not bot_can_post(interaction):
        return Destination(interaction.guild_id, None)
    nsfw = bool(getattr(channel, "is_nsfw", lambda: False)())
    return Destination(interaction.guild_id, interaction.channel_id, age_restricted=nsfw)


def model_label(job: Job) -> str:
    base = "SDXL" if job.params.get("base_model", "sdxl") != "normal" else "SD 1.5"
    made = job.finished_at or job.created_at
    return f"#{job.id} {job.name} · {base} · {made:%Y-%m-%d}"[:100]


def progress_text(generation: Generation, job_name: str, *, in_dms: bool) -> str:
    where = "in your DMs" if in_dms else "in this channel"
    count = f"{generation.samples} picture{'s' if generation.samples > 1 else ''}"
    if generation.state is GenerationState.QUEUED and generation.attempts:
        return f"Queued: the image service is busy, so your {count} with **{job_name}** wait for a free place..."
    if generation.state is GenerationState.QUEUED:
        return f"Queued: {count} with **{job_name}**. I'll post them {where}."
    if generation.state in (GenerationState.SUBMITTING, GenerationState.PROCESSING):
        return f"Drawing {count} with **{job_name}**... I'll post them {where}."
    if generation.state is GenerationState.READY:
        return f"Done: your {count} are posted {where}."
    return f"No pictures this time: {generation.last_error or 'the image service could not make them.'}"


class GenerateButton(discord.ui.DynamicItem[Button], template=_template(GENERATE_BUTTON_ID, "job")):
    """Generate, on a ready model's card and DM: asks for a prompt in a modal."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Generate",
                style=discord.ButtonStyle.primary,
                custom_id=GENERATE_BUTTON_ID.format(job_id=job_id),
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> GenerateButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Imagine")  # type: ignore[attr-defined]
        assert isinstance(cog, Imagine)
        try:
            job = await cog.bot.services.generations.model_for(interaction.user.id, str(self.job_id))
        except Exception as error:
            await report_error(interaction, error)
            return
        await interaction.response.send_modal(PromptModal(cog, job))


class AgainButton(discord.ui.DynamicItem[Button], template=_template(AGAIN_BUTTON_ID, "generation")):
    """Again, under a result: the same settings with a new seed."""

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Again",
                style=discord.ButtonStyle.secondary,
                custom_id=AGAIN_BUTTON_ID.format(generation_id=generation_id),
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AgainButton:
        return cls(int(match["generation"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Imagine")  # type: ignore[attr-defined]
        assert isinstance(cog, Imagine)
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            generation = await cog.bot.services.generations.again(requester(interaction), self.generation_id)
            await cog.acknowledge(interaction, generation)
        except Exception as error:
            await report_error(interaction, error)


class PromptModal(discord.ui.Modal, title="Generate pictures"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="What should it draw?",
        placeholder="on a beach at sunset, golden hour",
        style=discord.TextStyle.paragraph,
        max_length=500,
    )
    count: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="How many pictures (1-4)", default="1", max_length=1, required=False
    )

    def __init__(self, cog: Imagine, job: Job) -> None:
        super().__init__(custom_id=f"lorabot:imagine:prompt:{job.id}")
        self.cog = cog
        self.job = job

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            count = int(self.count.value or "1")
        except ValueError:
            count = 1
        options = ImagineOptions(prompt=self.prompt.value, count=min(4, max(1, count)))
        await self.cog.generate(interaction, self.job, options)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        await report_error(interaction, error)


class Imagine(commands.Cog):
    def __init__(self, bot: LoraBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(GenerateButton, AgainButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(GenerateButton, AgainButton)

    @app_commands.command(name="imagine", description="Make pictures with a LoRA you trained")
    @app_commands.describe(
        prompt="What to draw; your model's trigger words are added for you",
        model="Which of your ready models (default: the newest)",
        strength="How strongly the LoRA applies, 0.1 to 1.0 (default 0.8)",
        count="How many pictures, 1 to 4 (default 1)",
        negative_prompt="Things you don't want in the pictures",
        seed="A seed for repeatable pictures (default: random)",
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 500],
        model: str | None = None,
        strength: app_commands.Range[float, 0.1, 1.0] = 0.8,
        count: app_commands.Range[int, 1, 4] = 1,
        negative_prompt: app_commands.Range[str, 1, 500] | None = None,
        seed: app_commands.Range[int, 0, 4294967295] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.bot.services.generations.model_for(interaction.user.id, model)
        options = ImagineOptions(prompt, strength, count, negative_prompt, seed)
        await self.generate(interaction, job, options)

    @imagine.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Only the invoker's ready models, newest first."""
        jobs = await self.bot.services.generations.ready_models(interaction.user.id, current.strip().lstrip("#"))
        return [app_commands.Choice(name=model_label(job), value=str(job.id)) for job in jobs]

    async def generate(self, interaction: discord.Interaction, job: Job, options: ImagineOptions) -> None:
        if not interaction.response.is_done():
            await interaction.response.defer(ephemeral=True, thinking=True)
        generation = await self.bot.services.generations.imagine(
            requester(interaction), job, options, destination(interaction)
        )
        await self.acknowledge(interaction, generation)

    async def acknowledge(self, interaction: discord.Interaction, generation: Generation) -> None:
        """Tell the member it's under way, then keep that note up to date while the token lives."""
        job = await self.bot.services.generations.model_of(generation)
        name = job.name if job else "your model"
        in_dms = generation.channel_id is None
        await interaction.edit_original_response(content=progress_text(generation, name, in_dms=in_dms))
        self.bot.services.supervisor.spawn(
            "imagine-progress", self._follow(interaction, generation, name), task_name=f"imagine-{generation.id}"
        )

    async def _follow(self, interaction: discord.Interaction, generation: Generation, name: str) -> None:
        shown = progress_text(generation, name, in_dms=generation.channel_id is None)
        loop = asyncio.get_running_loop()
        until = loop.time() + WATCH_SECONDS
        while loop.time() < until:
            await asyncio.sleep(WATCH_EVERY)
            current = await self.bot.services.generations.describe(generation.id)
            if current is None:
                return
            text = progress_text(current, name, in_dms=current.channel_id is None)
            if text != shown:
                try:
                    await interaction.edit_original_response(content=text)
                except discord.HTTPException as error:  # the token expired or the message is gone
                    log.info("generation %s: could not update the note (%s)", generation.id, error.status)
                    return
                shown = text
            if current.state.is_terminal:
                return


async def setup(bot: LoraBot) -> None:
    await bot.add_cog(Imagine(bot))
