"""/train: photos in, preview out, and the Start / Cancel buttons that submit or drop the job."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.model import JobNotFound, PreviewPhoto
from bot.jobs.photos import collect_photos, preview_grid
from bot.jobs.service import TrainingParams
from bot.jobs.states import JobState
from bot.render import preview_embed, problems_text, queue_wait_text, start_outcome
from cogs.access import bot_can_post, bot_can_post_in, requester
from cogs.errors import report_error, user_message

if TYPE_CHECKING:
    from bot.discord_bot import LoraBot

log = logging.getLogger(__name__)

Choice = app_commands.Choice
BASE_MODELS = [Choice(name="SDXL", value="sdxl"), Choice(name="Stable Diffusion 1.5 (normal)", value="normal")]
SUBJECTS = [Choice(name=n, value=n) for n in ("man", "woman", "couple", "object")]
LORA_TYPES = [Choice(name="LoRA", value="lora"), Choice(name="LyCORIS", value="lycoris")]
NO_LONGER_ACTIVE = "This preview is no longer active (it expired, or the bot restarted). Run /train again."
#: The supervisor's name for the previews' background work (expiry timers, clean-ups).
PREVIEW_TASKS = "preview-timers"


@dataclass
class PendingPreview:
    """The ephemeral preview message this process showed, so its timer can mark it expired.

    The preview itself (crops, choices) is in the database: a Start click may land on any process.
    """

    job_id: int
    owner_id: int
    interaction: discord.Interaction
    expires_at: datetime
    timer: asyncio.Task[None] | None = field(default=None, repr=False)


def default_name(instance_prompt: str) -> str:
    words = re.sub(r"\s+", " ", instance_prompt).strip()
    return (words[:60] + "...") if len(words) > 63 else words


class PreviewButton(
    discord.ui.DynamicItem[discord.ui.Button["discord.ui.View"]],
    template=r"lorabot:preview:(?P<action>start|drop):(?P<job>\d+)",
):
    """Start / Cancel on a preview. Dynamic, so a click after a restart gets a clear answer."""

    def __init__(self, action: str, job_id: int) -> None:
        start = action == "start"
        super().__init__(
            discord.ui.Button(
                label="Start training" if start else "Cancel",
                style=discord.ButtonStyle.success if start else discord.ButtonStyle.secondary,
                custom_id=f"lorabot:preview:{action}:{job_id}",
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PreviewButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Training")  # type: ignore[attr-defined]
        assert isinstance(cog, Training)
        try:
            await cog.on_preview_button(interaction, self.action, self.job_id)
        except Exception as error:
            await report_error(interaction, error)


def preview_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(PreviewButton("start", job_id))
    view.add_item(PreviewButton("drop", job_id))
    return view


class Training(commands.Cog):
    def __init__(self, bot: LoraBot) -> None:
        self.bot = bot
        self.previews: dict[int, PendingPreview] = {}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PreviewButton)
        self.bot.services.jobs.add_forget_listener(self.forget_previews)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PreviewButton)
        for preview in self.previews.values():
            if preview.timer:
                preview.timer.cancel()

    @app_commands.command(name="train", description="Train a LoRA on 5 to 10 photos of a person or an object")
    @app_commands.describe(
        instance_prompt="How you will call the subject, e.g. 'photo of sks man'",
        class_prompt="The subject's class, e.g. 'photo of a man'",
        image1="A photo of the subject (5 to 10 photos in all)",
        base_model="The base model to train on (default SDXL)",
        training_type="What the photos show (default man)",
        lora_type="LoRA or LyCORIS (default LoRA)",
        negative_prompt="Things you don't want (default: the provider's usual list)",
        max_train_steps="Training steps (default 2 x the number of photos, at most 2000)",
        seed="A seed for a repeatable training",
        name="A label for /mymodels (default: from the instance prompt)",
    )
    @app_commands.choices(base_model=BASE_MODELS, training_type=SUBJECTS, lora_type=LORA_TYPES)
    async def train(
        self,
        interaction: discord.Interaction,
        instance_prompt: app_commands.Range[str, 3, 300],
        class_prompt: app_commands.Range[str, 3, 300],
        image1: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        image8: discord.Attachment | None = None,
        image9: discord.Attachment | None = None,
        image10: discord.Attachment | None = None,
        base_model: str = "sdxl",
        training_type: str = "man",
        lora_type: str = "lora",
        negative_prompt: app_commands.Range[str, 1, 1500] | None = None,
        max_train_steps: app_commands.Range[int, 1, 2000] | None = None,
        seed: app_commands.Range[int, 0, 4294967295] | None = None,
        name: app_commands.Range[str, 1, 80] | None = None,
    ) -> None:
        # Acknowledge first: downloads and image work can take longer than Discord's 3 seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        services = self.bot.services
        await services.jobs.check_can_train(requester(interaction))

        attachments = [
            a for a in (image1, image2, image3, image4, image5, image6, image7, image8, image9, image10) if a
        ]
        batch = await collect_photos(attachments, services.image_limits, services.executor)
        if not batch.ok:
            problems = problems_text([r.message for r in batch.rejected], batch.count_problem, batch.warnings)
            await interaction.edit_original_response(content=problems)
            return

        params = TrainingParams(
            instance_prompt=instance_prompt.strip(),
            class_prompt=class_prompt.strip(),
            base_model=base_model,
            training_type=training_type,
            lora_type=lora_type,
            negative_prompt=negative_prompt.strip() if negative_prompt else None,
            max_train_steps=max_train_steps,
            seed=seed,
        )
        label = (name or default_name(instance_prompt)).strip()
        card_channel_id, card_in_dms = await self._card_destination(interaction)
        expires_at = discord.utils.utcnow() + timedelta(seconds=services.settings.preview_timeout_seconds)
        job = await services.jobs.create_preview(
            owner_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=card_channel_id,
            name=label,
            params=params,
            photos=[
                PreviewPhoto(f"photo{i + 1}.{image.extension}", image.data) for i, image in enumerate(batch.images)
            ],
            card_in_dms=card_in_dms,
            expires_at=expires_at,
        )
        grid = await preview_grid(batch.images, services.executor)
        embed = preview_embed(
            job_id=job.id,
            name=label,
            params=params.as_dict(),
            image_count=len(batch.images),
            steps=params.steps_for(len(batch.images)),
            warnings=batch.warnings,
            card_in_dms=card_in_dms,
            expires_at=expires_at,
            card_channel_id=card_channel_id if card_channel_id != interaction.channel_id else None,
        )
        preview = PendingPreview(job.id, interaction.user.id, interaction, expires_at)
        self.previews[job.id] = preview
        preview.timer = services.supervisor.spawn(
            PREVIEW_TASKS, self._expire_later(preview), task_name=f"preview-{job.id}"
        )
        await interaction.edit_original_response(
            embed=embed,
            attachments=[discord.File(io.BytesIO(grid), filename="preview.jpg")],
            view=preview_view(job.id),
        )

    async def _card_destination(self, interaction: discord.Interaction) -> tuple[int, bool]:
        """Where the job's card goes, as (channel id, in the member's DMs instead): the server's card
        channel if it set one the bot can post in, else where /train was used; DMs when neither."""
        policy = await self.bot.services.server_settings.effective(interaction.guild_id)
        guild = interaction.guild
        if policy.card_channel_id is not None and guild is not None:
            if await bot_can_post_in(guild, policy.card_channel_id, self.bot.user.id if self.bot.user else None):
                return policy.card_channel_id, False
            log.warning(
                "guild %s: cannot post in the card channel %s (gone, or permissions changed); using the channel "
                "of /train",
                guild.id,
                policy.card_channel_id,
            )
        return interaction.channel_id or 0, not bot_can_post(interaction)

    async def _expire_later(self, preview: PendingPreview) -> None:
        await asyncio.sleep(max(0.0, (preview.expires_at - discord.utils.utcnow()).total_seconds()))
        if self.previews.pop(preview.job_id, None) is None:
            return
        try:
            result = await self.bot.services.jobs.expire_preview(preview.job_id, "The preview timed out.")
        except JobNotFound:  # deleted with /forgetme in the meantime: nothing left to expire
            return
        if not result.changed:  # started or dismissed meanwhile, from a click another process took
            return
        try:
            await preview.interaction.edit_original_response(
                content="This preview expired; nothing was sent. Run /train again when you're ready.",
                embed=None,
                attachments=[],
                view=None,
            )
        except discord.HTTPException as error:
            log.info("job %s: could not mark the preview expired (%s)", preview.job_id, error.status)

    async def on_preview_button(self, interaction: discord.Interaction, action: str, job_id: int) -> None:
        """Start or Cancel, on whichever process Discord sent the click to: the database decides."""
        jobs = self.bot.services.jobs
        job = await jobs.get_job(job_id)
        if job is not None and job.owner_id != interaction.user.id:
            await interaction.response.send_message("This preview isn't yours.", ephemeral=True)
            return
        local = self.previews.pop(job_id, None)  # this process's timer for it, if it showed it
        if local is not None and local.timer:
            local.timer.cancel()
        if job is None or job.state is not JobState.PREVIEW:  # deleted (/forgetme), started or expired
            await self._no_longer_active(interaction)
            return
        if action == "drop":
            await jobs.expire_preview(job_id, "Cancelled from the preview.")
            await interaction.response.edit_message(
                content="Cancelled. Nothing was sent.", embed=None, attachments=[], view=None
            )
            return
        await interaction.response.edit_message(content="Submitting your training...", view=None)
        try:
            message = await self.start(interaction, job_id)
        except JobNotFound:  # deleted with /forgetme between the click and the submission
            message = NO_LONGER_ACTIVE
        except Exception as error:
            refusal = user_message(error)  # a refusal replaces "Submitting..." rather than hiding below it
            if refusal is None:
                raise
            message = refusal
        try:
            await interaction.edit_original_response(content=message, embed=None, attachments=[], view=None)
        except discord.HTTPException as error:
            # The job is submitted and its card is posted; only this ephemeral note is lost.
            log.info("job %s: could not update the preview message (%s %s)", job_id, error.status, error.code)

    @staticmethod
    async def _no_longer_active(interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=NO_LONGER_ACTIVE, embed=None, attachments=[], view=None)

    def forget_previews(self, user_id: int) -> None:
        """/forgetme: drop the user's previews (their crops are the user's photos) and clear them from
        the preview messages too."""
        for preview in [p for p in self.previews.values() if p.owner_id == user_id]:
            del self.previews[preview.job_id]
            if preview.timer:
                preview.timer.cancel()
            self.bot.services.supervisor.spawn(
                PREVIEW_TASKS, self._clear_preview(preview), task_name=f"preview-{preview.job_id}-forget"
            )

    @staticmethod
    async def _clear_preview(preview: PendingPreview) -> None:
        try:
            await preview.interaction.edit_original_response(
                content=NO_LONGER_ACTIVE, embed=None, attachments=[], view=None
            )
        except discord.HTTPException as error:  # e.g. the interaction token expired
            log.info("job %s: could not clear the forgotten preview (%s)", preview.job_id, error.status)

    async def start(self, interaction: discord.Interaction, job_id: int) -> str:
        """Submit a confirmed preview; returns the message for the owner."""

        async def queue_full(seconds: float) -> None:
            try:
                await interaction.edit_original_response(content=queue_wait_text(seconds))
            except discord.HTTPException as error:  # only the note is lost; the submission goes on
                log.info("job %s: could not show the queue wait (%s)", job_id, error.status)

        job = await self.bot.services.starter.start(job_id, requester(interaction), on_queue_wait=queue_full)
        return start_outcome(job)


async def setup(bot: LoraBot) -> None:
    await bot.add_cog(Training(bot))
