"""The discord.py client: no privileged intents, cogs loaded from `cogs/`, commands synced on change.

It is an `AutoShardedBot` over SHARD_COUNT / SHARD_IDS (one shard when both are unset and Discord
recommends one), so several processes can each run some of the bot's shards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import cast

import discord
import yarl
from discord.ext import commands

from bot.config import Settings
from bot.delivery.notifier import Notifier
from bot.images import ImageLimits
from bot.invite import invite_url
from bot.jobs.generations import GenerationService
from bot.jobs.ports import KeyValue
from bot.jobs.queries import JobQueries
from bot.jobs.server_settings import ServerSettings
from bot.jobs.service import JobService
from bot.jobs.submission import TrainingStarter
from bot.sharding import ShardsHealth, ShardState, ShardStatus, latency_ms
from bot.supervisor import Supervisor

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.errors", "cogs.training", "cogs.jobs", "cogs.imagine", "cogs.admin")
COMMANDS_HASH_KEY = "commands_hash"

# The bot never joins voice: no "PyNaCl / davey is not installed, voice will NOT be supported"
# warnings at every start (discord.py logs them when it builds a client, unless these are off).
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


@dataclass
class Services:
    """Everything the cogs use (services, never a store or a provider client), built once by the
    app and handed to the bot."""

    settings: Settings
    jobs: JobService
    queries: JobQueries
    notifier: Notifier
    image_limits: ImageLimits
    starter: TrainingStarter
    generations: GenerationService
    server_settings: ServerSettings
    executor: Executor | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)  # runs the cogs' background tasks


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Send discord.py's REST calls and gateway connection where the settings say (proxies, tests)."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class LoraBot(commands.AutoShardedBot):
    services: Services
    memory: KeyValue

    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channels, roles and permissions; nothing privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            max_ratelimit_timeout=60.0,
            shard_count=settings.shard_count,
            # None (all shards of the count) is discord.py's own default; its stubs only say list.
            shard_ids=cast("list[int]", settings.shard_ids),
        )
        self.settings = settings
        self._invite_logged = False
        #: Shards whose session is up (READY or RESUMED, and not disconnected since).
        self._live_shards: set[int] = set()
        #: Shards that have had a session at least once.
        self._connected_once: set[int] = set()

    def attach(self, services: Services, memory: KeyValue) -> None:
        """The services for the cogs, and where the digest of the synced commands is kept."""
        self.services = services
        self.memory = memory

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        try:
            await self.sync_commands_if_changed()
        except (discord.HTTPException, discord.app_commands.CommandSyncFailure) as error:
            log.error("could not sync application commands (%s); the previous definition stays", error)

    async def close(self) -> None:
        if not isinstance(cast(object, self.loop), asyncio.AbstractEventLoop):
            # Never logged in (e.g. built only to read its commands): discord.py's sharded close()
            # needs what login() sets up first.
            await self._async_setup_hook()
        await super().close()

    def _sync_target(self) -> discord.Object | None:
        guild_id = self.settings.discord_guild_id
        return discord.Object(guild_id) if guild_id else None

    async def sync_commands_if_changed(self) -> bool:
        """Sync application commands only when their definition (or target) changed."""
        guild = self._sync_target()
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        definition = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(
            json.dumps(
                # The application too: a new token (another application) on the same database syncs again.
                {"application": self.application_id, "guild": guild.id if guild else None, "commands": definition},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        if await self.memory.get_value(COMMANDS_HASH_KEY) == digest:
            log.info("application commands unchanged; not syncing")
            return False
        await self.tree.sync(guild=guild)
        await self.memory.set_value(COMMANDS_HASH_KEY, digest)
        log.info("synced %d application commands %s", len(definition), f"to guild {guild.id}" if guild else "globally")
        return True

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s", self.user)
        # A process that runs only some of the shards may well have no server of its own.
        all_shards = self.settings.shard_ids is None
        if all_shards and not self.guilds and not self._invite_logged and self.application_id is not None:
            self._invite_logged = True  # once per process, not at every reconnect
            log.warning("the bot is in no server yet; invite it: %s", invite_url(self.application_id))
        await self.services.notifier.connection_restored()

        # Servers that removed the bot while it was offline start their settings' countdown.
        await self.services.server_settings.reconcile_presence(
            [guild.id for guild in self.guilds], ours=self.runs_guild
        )

    async def on_resumed(self) -> None:
        await self.services.notifier.connection_restored()

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """Removed from a server (an outage is `on_guild_unavailable`): its settings are kept for a
        while, in case the bot is invited back, then deleted."""
        await self.services.server_settings.left(guild.id)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.services.server_settings.returned(guild.id)

    def runs_guild(self, guild_id: int) -> bool:
        """Whether this process runs the shard that serves `guild_id` (Discord's sharding formula)."""
        count = self.known_shard_count
        return count is not None and (guild_id >> 22) % count in self.own_shard_ids()

    # -- shards -------------------------------------------------------------------------------------

    async def connect(self, *, reconnect: bool = True) -> None:
        """discord.py's sharded `connect()`, which a cancellation always ends.

        Its loop swallows a cancellation that lands while a shard reconnects, then waits for the
        next shard event forever (and the stop with it). So it runs as a task of its own; when this
        is cancelled, the bot is closed, which ends that loop, and only then does this return.
        """
        running = asyncio.ensure_future(super().connect(reconnect=reconnect))
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            await self.close()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            raise

    async def launch_shards(self) -> None:
        # discord.py would connect to the gateway URL that `GET /gateway/bot` names when it asks
        # for the shard count; asking here first keeps every shard on DISCORD_GATEWAY_URL.
        if self.known_shard_count is None and not self.is_closed():
            self.shard_count, _url, _limits = await self.http.get_bot_gateway()
        log.info("running shard(s) %s of %s", ", ".join(map(str, self.own_shard_ids())), self.shard_count)
        await super().launch_shards()

    async def on_shard_connect(self, shard_id: int) -> None:
        self._live_shards.add(shard_id)
        self._connected_once.add(shard_id)

    async def on_shard_resumed(self, shard_id: int) -> None:
        self._live_shards.add(shard_id)

    async def on_shard_disconnect(self, shard_id: int) -> None:
        self._live_shards.discard(shard_id)

    @property
    def known_shard_count(self) -> int | None:
        """The bot's total number of shards; None until asked (SHARD_COUNT unset)."""
        # discord.py declares it `int`, but it is None until `launch_shards` has asked Discord.
        return cast("int | None", self.shard_count)

    def own_shard_ids(self) -> list[int]:
        """The shards this process runs; empty until the count is known (SHARD_COUNT unset)."""
        if self.shard_ids is not None:
            return list(self.shard_ids)
        count = self.known_shard_count
        return list(range(count)) if count is not None else []

    @property
    def has_connected(self) -> bool:
        """Every shard of this process has had a session: from then on the bot answers interactions
        in all its guilds (/healthz says "starting" until then)."""
        own = self.own_shard_ids()
        return bool(own) and self._connected_once.issuperset(own)

    def shard_status(self, shard_id: int) -> ShardStatus:
        if self.is_closed():
            return "closed"
        shard = self.get_shard(shard_id)
        if shard is not None and not shard.is_closed() and shard_id in self._live_shards:
            return "connected"
        return "connecting"

    def shard_health(self) -> ShardsHealth:
        """For /healthz: this process's shards, each one's connection and heartbeat latency."""
        states: list[ShardState] = []
        for shard_id in self.own_shard_ids():
            shard = self.get_shard(shard_id)
            latency = latency_ms(shard.latency) if shard is not None else None
            states.append({"id": shard_id, "status": self.shard_status(shard_id), "latency_ms": latency})
        return {"count": self.known_shard_count, "ids": self.own_shard_ids(), "states": states}

    def connection_status(self) -> ShardStatus:
        """For /healthz: connected while every shard of this process has its session up and open."""
        if self.is_closed():
            return "closed"
        own = self.own_shard_ids()
        if own and all(self.shard_status(shard_id) == "connected" for shard_id in own):
            return "connected"
        return "connecting"
