"""The discord.py client: no privileged intents, cogs loaded from `cogs/`, commands synced on change."""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field

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
from bot.jobs.service import JobService
from bot.jobs.submission import TrainingStarter
from bot.supervisor import Supervisor

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.errors", "cogs.training", "cogs.jobs", "cogs.imagine")
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
    executor: Executor | None = None
    supervisor: Supervisor = field(default_factory=Supervisor)  # runs the cogs' background tasks


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Send discord.py's REST calls and gateway connection where the settings say (proxies, tests)."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class LoraBot(commands.Bot):
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
        )
        self.settings = settings
        #: From the first gateway READY on, the bot answers interactions; /healthz says "starting" until then.
        self.has_connected = False
        self._invite_logged = False

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
        if not self.guilds and not self._invite_logged and self.application_id is not None:
            self._invite_logged = True  # once per process, not at every reconnect
            log.warning("the bot is in no server yet; invite it: %s", invite_url(self.application_id))
        await self.services.notifier.connection_restored()

    async def on_connect(self) -> None:
        self.has_connected = True

    async def on_resumed(self) -> None:
        await self.services.notifier.connection_restored()

    def connection_status(self) -> str:
        """For /healthz: connected once the gateway session is up (READY received) and open."""
        if self.is_closed():
            return "closed"
        ws = self.ws
        if self.user is not None and ws is not None and not ws.socket.closed:
            return "connected"
        return "connecting"
