"""How /lora-admin shows a server's settings, their changes and the server's jobs (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord

from bot.jobs.model import FORGOTTEN_MEMBER, GuildSettingChange, Job
from bot.jobs.server_settings import SPECS, SPECS_BY_KEY, ServerPolicy, SettingUpdate, Source, Spec
from bot.render import status_text, timestamp

SOURCE_TEXT: dict[Source, str] = {"server": "set on this server", "default": "default"}


def value_text(spec: Spec, value: Any) -> str:
    """A setting's value as a member reads it: channels and roles as mentions, 0 as no limit."""
    if spec.kind == "channel":
        return "where /train is used" if value is None else f"<#{value}>"
    if spec.kind == "roles":
        return ", ".join(f"<@&{role}>" for role in value) if value else "everyone"
    if spec.kind == "switch":
        return "on" if value else "off"
    if spec.kind == "seconds":
        return "none" if not value else f"{value} s"
    return "no limit" if value == 0 else str(value)


def settings_embed(guild_name: str, policy: ServerPolicy, history: Sequence[GuildSettingChange]) -> discord.Embed:
    """`/lora-admin show`: every setting in effect, where it comes from, and the latest changes."""
    embed = discord.Embed(
        title=f"lorabot settings for {guild_name}"[:256],
        description="Values set on this server apply here only; the others follow the bot's defaults.",
        colour=discord.Colour.blurple(),
    )
    for spec in SPECS:
        value = value_text(spec, policy.value(spec.key))
        embed.add_field(name=spec.label, value=f"{value} ({SOURCE_TEXT[policy.source(spec.key)]})"[:1024])
    if history:
        embed.add_field(name="Latest changes", value="\n".join(change_line(c) for c in history)[:1024], inline=False)
    return embed


def change_line(change: GuildSettingChange) -> str:
    spec = SPECS_BY_KEY.get(change.key)
    who = "a forgotten member" if change.changed_by == FORGOTTEN_MEMBER else f"<@{change.changed_by}>"
    if spec is None:
        return f"{timestamp(change.changed_at, 'R')} {who} changed `{change.key}`"
    old = "default" if change.old is None else value_text(spec, _held(spec, change.old))
    new = "default" if change.new is None else value_text(spec, _held(spec, change.new))
    return f"{timestamp(change.changed_at, 'R')} {who}: {spec.label} {old} → {new}"


def _held(spec: Spec, stored: Any) -> Any:
    return tuple(stored) if spec.kind == "roles" and isinstance(stored, list) else stored


def updates_text(updates: Sequence[SettingUpdate]) -> str:
    """The answer to a change: each setting from what to what, and where each value comes from."""
    lines = []
    for update in updates:
        before = f"{value_text(update.spec, update.before)} ({SOURCE_TEXT[update.before_source]})"
        after = f"{value_text(update.spec, update.after)} ({SOURCE_TEXT[update.after_source]})"
        if update.changed:
            lines.append(f"**{update.spec.label}**: {before} → {after}")
        else:
            lines.append(f"**{update.spec.label}**: unchanged, {after}")
    return "\n".join(lines)


def job_line(job: Job) -> str:
    return f"#{job.id} **{job.name}** by <@{job.owner_id}>: {status_text(job)}, {timestamp(job.updated_at, 'R')}"


def server_jobs_embed(active: Sequence[Job], failures: Sequence[Job]) -> discord.Embed:
    """`/lora-admin jobs`: the server's running trainings and its recent failures."""
    embed = discord.Embed(title="Trainings on this server", colour=discord.Colour.blurple())
    running = "\n".join(job_line(job) for job in active) or "None right now."
    embed.add_field(name=f"Running ({len(active)})", value=running[:1024], inline=False)
    failed = "\n".join(f"{job_line(job)}\n  {job.last_error or 'no reason given'}"[:300] for job in failures)
    embed.add_field(name="Failed in the last 7 days", value=(failed or "None.")[:1024], inline=False)
    if active:
        embed.set_footer(text="Pick a training below to cancel it (you will be asked to confirm).")
    return embed
