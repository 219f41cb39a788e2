"""Gateway shards: what /healthz says about this process's shards, and Discord's refusals of them.

Discord splits a bot's guilds over `SHARD_COUNT` gateway connections (a guild's events go to shard
`(guild_id >> 22) % SHARD_COUNT`, DMs to shard 0). One process runs `SHARD_IDS` of them; several
processes with disjoint ids share one database.
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict

from bot.config import Settings

ShardStatus = Literal["connected", "connecting", "closed"]

#: Gateway close codes that no reconnect can cure: the shard settings must change.
CLOSE_INVALID_SHARD = 4010
CLOSE_SHARDING_REQUIRED = 4011


class ShardState(TypedDict):
    id: int
    status: ShardStatus
    #: Between the last heartbeat and its acknowledgement; None before the first one.
    latency_ms: float | None


class ShardsHealth(TypedDict):
    """The `shards` object of /healthz."""

    #: The bot's total number of shards; None until known (SHARD_COUNT unset and not asked yet).
    count: int | None
    #: The shards this process runs.
    ids: list[int]
    states: list[ShardState]


def latency_ms(seconds: float) -> float | None:
    """A heartbeat latency for JSON: milliseconds, or None while there is none (discord.py says inf)."""
    return round(seconds * 1000, 1) if math.isfinite(seconds) else None


def gateway_refusal(code: int | None, shard_id: int | None, settings: Settings) -> str | None:
    """The one-line fix when Discord closed a shard's connection for good over the shard settings;
    None for any other close (reconnecting may cure it)."""
    shard = f"shard {shard_id}" if shard_id is not None else "a shard"
    count = settings.shard_count
    if code == CLOSE_INVALID_SHARD:
        return (
            f"SHARD_IDS: Discord refused {shard} of SHARD_COUNT={count if count is not None else 'auto'} "
            "(4010 invalid shard: it does not exist, or another process already runs it); give each "
            "process its own SHARD_IDS below SHARD_COUNT, and the same SHARD_COUNT to all"
        )
    if code == CLOSE_SHARDING_REQUIRED:
        return (
            f"SHARD_COUNT: Discord requires more shards for this bot (4011 sharding required, on {shard}); "
            "raise SHARD_COUNT, or unset it (and SHARD_IDS) to use the count Discord recommends"
        )
    return None
