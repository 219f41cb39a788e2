"""How jobs look in Discord: the job card, the timeline, and the owner's DMs. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import discord

from bot.jobs.states import JobState, parse_provider_word
from bot.store import Job, JobEvent

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


def job_card(job: Job, events: Sequence[JobEvent]) -> discord.Embed:
    """The job's card: one message per job, edited in place as the job moves."""
    embed = discord.Embed(
        title=f"LoRA training #{job.id}: {job.name}"[:256],
        description=f"**{status_text(job)}**",
        colour=COLOURS.get(job.state, discord.Colour.blurple()),
    )
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


def outcome_message(job: Job, state: JobState) -> str:
    """The owner's DM (or channel mention) for an outcome."""
    link = card_link(job)
    where = f"\nCard: {link}" if link else ""
    prompt = job.params.get("instance_prompt", "")
    if state is JobState.MODEL_READY:
        return (
            f"Your LoRA **{job.name}** (job #{job.id}) is ready.\n"
            f"Model id: `{job.training_id}`\n"
            f"Use it by putting your instance prompt in your prompts: `{prompt}`\n"
            f"With the Stable Diffusion API, pass `{job.training_id}` as `lora_model` to a text2img request "
            f"on a {job.params.get('base_model', 'sdxl')} base model.{where}"
        )
    if state is JobState.FAILED:
        reason = job.last_error or "The provider reported a failure."
        return f"Your LoRA training **{job.name}** (job #{job.id}) failed.\nReason: {reason}{where}"
    if state is JobState.CANCELLED:
        return f"Your LoRA training **{job.name}** (job #{job.id}) was cancelled.{where}"
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
) -> discord.Embed:
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
    embed.set_image(url="attachment://preview.jpg")
    embed.set_footer(text=f"Job {job_id}")
    return embed


def job_list_embed(jobs: Sequence[Job], *, page: int, pages: int, total: int) -> discord.Embed:
    embed = discord.Embed(title="Your LoRA trainings", colour=discord.Colour.blurple())
    if not jobs:
        embed.description = "You have no trainings yet. Start one with /train."
    for job in jobs:
        model = f"`{job.training_id}`" if job.training_id else "no model id"
        embed.add_field(
            name=f"#{job.id} · {job.name}"[:256],
            value=f"{status_text(job)} · {model} · created {timestamp(job.created_at, 'f')}",
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
