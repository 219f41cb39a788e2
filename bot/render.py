"""How jobs look in Discord: the job card, the timeline, and the owner's DMs. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import discord

from bot.jobs.generation_model import Generation, GenerationState, StoredPicture
from bot.jobs.model import CANCELLED_BY_OWNER, Job, JobEvent
from bot.jobs.states import JobState, parse_provider_word

#: What every card and DM of `lorabot run --simulate` says.
SIMULATED_NOTE = (
    "This training is simulated (`lorabot run --simulate`): the built-in simulator stands in for the "
    "provider, so no model is really trained and nothing is charged."
)

#: Buttons whose clicks the /imagine cog handles (its DynamicItem templates match these ids).
GENERATE_BUTTON_ID = "lorabot:imagine:open:{job_id}"
AGAIN_BUTTON_ID = "lorabot:imagine:again:{generation_id}"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}

COLOURS = {
    JobState.MODEL_READY: discord.Colour.green(),
    JobState.FAILED: discord.Colour.red(),
    JobState.CANCELLED: discord.Colour.dark_grey(),
    JobState.EXPIRED: discord.Colour.dark_grey(),
    JobState.UNCERTAIN: discord.Colour.orange(),
}


def timestamp(moment: datetime, style: str = "T") -> str:
    """Discord's <t:unix:style> markup, rendered in each reader's own time zone."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def status_text(job: Job) -> str:
    """The state label, or the provider's own word when it sent one we do not know."""
    if job.provider_status and parse_provider_word(job.provider_status) is None and not job.state.is_terminal:
        return f"{job.state.label} (provider says `{job.provider_status}`)"
    return job.state.label


def event_label(status: str) -> str:
    try:
        return JobState(status).label
    except ValueError:
        return f"`{status}`"  # a word we do not know is shown as the provider sent it


def timeline_lines(events: Sequence[JobEvent], *, limit: int = 15) -> list[str]:
    lines = []
    for event in events:
        late = not event.applied and parse_provider_word(event.status) is not None
        lines.append(f"{timestamp(event.received_at)} {event_label(event.status)}{' (late, ignored)' if late else ''}")
    if len(lines) > limit:
        lines = [lines[0], f"... {len(lines) - limit + 1} more ...", *lines[-(limit - 2) :]]
    return lines


def job_card(job: Job, events: Sequence[JobEvent], *, simulated: bool = False) -> discord.Embed:
    """The job's card: one message per job, edited in place as the job moves (`simulated`: under
    `lorabot run --simulate`, the card says so)."""
    embed = discord.Embed(
        title=f"LoRA training #{job.id}: {job.name}"[:256],
        description=f"**{status_text(job)}**",
        colour=COLOURS.get(job.state, discord.Colour.blurple()),
    )
    if simulated:
        embed.add_field(name="Simulated", value=SIMULATED_NOTE, inline=False)
    embed.add_field(name="Owner", value=f"<@{job.owner_id}>")
    embed.add_field(name="Training id", value=f"`{job.training_id}`" if job.training_id else "not assigned yet")
    embed.add_field(name="Images", value=str(job.image_count))
    params = job.params
    embed.add_field(name="Instance prompt", value=str(params.get("instance_prompt", ""))[:1024] or "-", inline=False)
    embed.add_field(
        name="Settings",
        value=(
            f"base `{params.get('base_model')}` · type `{params.get('training_type')}` · "
            f"`{params.get('lora_type')}` · steps `{min(params.get('max_train_steps') or 2 * job.image_count, 2000)}`"
        ),
        inline=False,
    )
    if job.eta_text and not job.state.is_terminal:
        embed.add_field(name="Estimate", value=job.eta_text[:1024], inline=False)
    if job.last_error and job.state in (JobState.FAILED, JobState.UNCERTAIN, JobState.CANCELLED):
        embed.add_field(name="Details", value=job.last_error[:1024], inline=False)
    lines = timeline_lines(events)
    if lines:
        embed.add_field(name="Timeline", value="\n".join(lines)[:1024], inline=False)
    embed.set_footer(text=f"Job {job.id} · /status job:{job.id} · /cancel job:{job.id}")
    return embed


def card_link(job: Job) -> str | None:
    if job.card_channel_id is None or job.card_message_id is None:
        return None
    guild = job.guild_id if job.guild_id and job.card_channel_id == job.channel_id else "@me"
    return f"https://discord.com/channels/{guild}/{job.card_channel_id}/{job.card_message_id}"


def outcome_message(job: Job, state: JobState, *, simulated: bool = False) -> str:
    """The owner's DM (or channel mention) for an outcome (`simulated`: it says so)."""
    link = card_link(job)
    where = (f"\n{SIMULATED_NOTE}" if simulated else "") + (f"\nCard: {link}" if link else "")
    prompt = job.params.get("instance_prompt", "")
    if state is JobState.MODEL_READY:
        return (
            f"Your LoRA **{job.name}** (job #{job.id}) is ready.\n"
            f"Model id: `{job.training_id}`\n"
            f"Make pictures with it: press **Generate** below, or use `/imagine` (your trigger words "
            f"`{prompt}` are added for you).{where}"
        )
    if state is JobState.FAILED:
        reason = job.last_error or "The provider reported a failure."
        return f"Your LoRA training **{job.name}** (job #{job.id}) failed.\nReason: {reason}{where}"
    if state is JobState.CANCELLED:
        # Cancelled by someone else (a server manager): say who. The owner knows it was them.
        by = f"\n{job.last_error}" if job.last_error and job.last_error != CANCELLED_BY_OWNER else ""
        return f"Your LoRA training **{job.name}** (job #{job.id}) was cancelled.{by}{where}"
    if state is JobState.UNCERTAIN:
        return (
            f"Your LoRA training **{job.name}** (job #{job.id}) was sent, but the provider did not confirm it. "
            "It may still start; this card will update if it does. It will not be sent again automatically, "
            f"so you are never charged twice.{where}"
        )
    return f"Your LoRA training **{job.name}** (job #{job.id}): {job.state.label}.{where}"


def problems_text(rejected: Sequence[str], count_problem: str | None, warnings: Sequence[str]) -> str:
    """Why the photos can't be used: each bad file by name and why, then the count problem."""
    lines = ["**These photos can't be used for training:**"] if rejected else []
    lines += [f"- {discord.utils.escape_markdown(message)}" for message in rejected]
    if count_problem:
        lines.append(count_problem)
    if warnings:
        lines += ["", "Also:", *[f"- {warning}" for warning in warnings]]
    lines.append("\nFix these and run /train again.")
    return "\n".join(lines)[:1900]


def preview_embed(
    *,
    job_id: int,
    name: str,
    params: dict[str, object],
    image_count: int,
    steps: int,
    warnings: Sequence[str],
    card_in_dms: bool,
    expires_at: datetime,
    card_channel_id: int | None = None,
) -> discord.Embed:
    """The preview; `card_channel_id`: the server's card channel, named when the card goes there."""
    embed = discord.Embed(
        title=f"Preview: {name}"[:256],
        description=(
            f"{image_count} photos, cropped to 512x512 as shown. Press **Start** to train "
            f"(this preview expires {timestamp(expires_at, 'R')})."
        ),
        colour=discord.Colour.blurple(),
    )
    embed.add_field(name="Instance prompt", value=str(params["instance_prompt"])[:1024], inline=False)
    embed.add_field(name="Class prompt", value=str(params["class_prompt"])[:1024], inline=False)
    embed.add_field(name="Base model", value=str(params["base_model"]))
    embed.add_field(name="Subject", value=str(params["training_type"]))
    embed.add_field(name="LoRA type", value=str(params["lora_type"]))
    embed.add_field(name="Steps", value=str(steps))
    embed.add_field(
        name="Seed", value=str(params.get("seed") if params.get("seed") is not None else "provider default")
    )
    if params.get("negative_prompt"):
        embed.add_field(name="Negative prompt", value=str(params["negative_prompt"])[:1024], inline=False)
    if warnings:
        embed.add_field(name="Warnings", value="\n".join(f"- {w}" for w in warnings)[:1024], inline=False)
    if card_in_dms:
        embed.add_field(
            name="Where the job card goes",
            value="I can't post in this channel, so the job's card will be sent to your DMs instead.",
            inline=False,
        )
    elif card_channel_id is not None:
        embed.add_field(
            name="Where the job card goes",
            value=f"This server posts job cards in <#{card_channel_id}>.",
            inline=False,
        )
    embed.set_image(url="attachment://preview.jpg")
    embed.set_footer(text=f"Job {job_id}")
    return embed


def job_list_embed(
    jobs: Sequence[Job], *, page: int, pages: int, total: int, pictures: Mapping[int, int] | None = None
) -> discord.Embed:
    embed = discord.Embed(title="Your LoRA trainings", colour=discord.Colour.blurple())
    if not jobs:
        embed.description = "You have no trainings yet. Start one with /train."
    for job in jobs:
        model = f"`{job.training_id}`" if job.training_id else "no model id"
        embed.add_field(
            name=f"#{job.id} · {job.name}"[:256],
            value=f"{status_text(job)} · {model}{_pictures(job, pictures)} · created {timestamp(job.created_at, 'f')}",
            inline=False,
        )
    embed.set_footer(text=f"Page {page + 1} of {max(pages, 1)} · {total} trainings")
    return embed


def queue_wait_text(seconds: float) -> str:
    """What the owner reads while the submission waits for the provider's full queue."""
    when = timestamp(discord.utils.utcnow() + timedelta(seconds=seconds), "R")
    return (
        "The image service's queue is full right now, so it didn't take the training yet (nothing has been "
        f"charged). Trying again {when}..."
    )


def _pictures(job: Job, pictures: Mapping[int, int] | None) -> str:
    if pictures is None or job.state is not JobState.MODEL_READY:
        return ""
    made = pictures.get(job.id, 0)
    return f" · {made} picture{'' if made == 1 else 's'} made"


def start_outcome(job: Job) -> str:
    """What the owner reads in the preview once Start has done its work."""
    link = card_link(job) or ""
    if job.state is JobState.FAILED:
        return f"The training could not be started: {job.last_error}\n{link}"
    if job.state is JobState.UNCERTAIN:
        return (
            "I sent the training but the provider didn't confirm it in time. It may still start; the card "
            f"will update if it does, and it won't be sent twice.\n{link}"
        )
    return f"Training submitted! Follow it on its card: {link}\nI'll DM you when the model is ready."


# -- pictures (/imagine) ---------------------------------------------------------------------------


def generate_view(job_id: int) -> discord.ui.View:
    """The Generate button of a ready model (on its card and its ready DM)."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label="Generate", style=discord.ButtonStyle.primary, custom_id=GENERATE_BUTTON_ID.format(job_id=job_id)
        )
    )
    return view


def again_view(generation_id: int) -> discord.ui.View:
    """The Again button under a result: the same settings with a new seed."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label="Again",
            style=discord.ButtonStyle.secondary,
            custom_id=AGAIN_BUTTON_ID.format(generation_id=generation_id),
        )
    )
    return view


def generation_summary(generation: Generation, job: Job | None) -> str:
    """Prompt, model, strength and seed: what a member needs to make the same picture again."""
    model = f"**{job.name}**" if job is not None else "a deleted model"
    prompt = discord.utils.escape_markdown(generation.user_prompt)[:600]
    return f"*{prompt}*\nModel {model} · strength {generation.strength:g} · seed {generation.seed}"


def result_files(
    generation: Generation, pictures: Sequence[StoredPicture]
) -> tuple[list[tuple[str, bytes]], list[int], int]:
    """The files to post, the positions they came from, and how many were withheld.

    A picture the provider's safety checker flagged is posted as a spoiler in an age-restricted
    channel, and withheld anywhere else (DMs included).
    """
    files: list[tuple[str, bytes]] = []
    positions: list[int] = []
    withheld = 0
    for picture in pictures:
        if picture.data is None:
            continue
        if picture.nsfw and not generation.age_restricted:
            withheld += 1
            continue
        name = f"lorabot-{generation.id}-{picture.position + 1}.{_EXTENSIONS.get(picture.content_type, 'png')}"
        files.append((f"SPOILER_{name}" if picture.nsfw else name, picture.data))
        positions.append(picture.position)
    return files, positions, withheld


def withheld_note(withheld: int) -> str:
    if not withheld:
        return ""
    return (
        f"\n{withheld} picture(s) withheld: the image service's safety checker flagged them, and this isn't an "
        "age-restricted channel."
    )


def generation_message(generation: Generation, job: Job | None, posted: int, withheld: int) -> str:
    """The text of a result: the pictures' summary, or why there are none."""
    who = f"<@{generation.owner_id}>"
    summary = generation_summary(generation, job)
    if generation.state is GenerationState.READY:
        if posted == 0 and withheld == 0:
            return f"{who} the image service sent no pictures.\n{summary}"
        return f"{who} {summary}{withheld_note(withheld)}"
    reason = generation.last_error or "The image service could not make these pictures."
    return f"{who} I couldn't make your pictures: {reason}\n{summary}"
