"""`lorabot run`: wires the store, provider client, webhook server, Discord client and workers.

Everything runs in one event loop. The webhook server starts before Discord so that webhooks
are accepted and persisted even while Discord is unreachable; the outbox catches up later.
SIGTERM / Ctrl-C stop webhooks first, let in-flight writes finish, close the database, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.config import ConfigError, Settings
from bot.delivery.cards import DiscordCardPoster
from bot.delivery.messenger import Messenger
from bot.delivery.notifier import Notifier, process_identity
from bot.delivery.pictures import PictureDelivery
from bot.discord_bot import LoraBot, Services, point_discord_at
from bot.images import ImageLimits
from bot.jobs.generations import GenerationRunner, GenerationService
from bot.jobs.ports import JobStore, Leadership
from bot.jobs.provider_errors import InvalidApiKey, ProviderError, ProviderMisconfigured
from bot.jobs.queries import JobQueries
from bot.jobs.reconciler import Reconciler
from bot.jobs.server_settings import ServerSettings
from bot.jobs.service import JobService
from bot.jobs.submission import TrainingStarter
from bot.leader import LeaderLoop
from bot.logging_setup import redactor
from bot.metrics import Metrics
from bot.provider.client import ProviderClient
from bot.sharding import gateway_refusal
from bot.store.leadership import AdvisoryLockLeadership, SingleProcessLeadership
from bot.store.open import StoreDatabase, Stores, open_stores
from bot.supervisor import Supervisor
from bot.webhooks import WebhookServer

log = logging.getLogger(__name__)


def listen_error(host: str, port: int, error: OSError) -> str:
    """One line naming the setting to change when the webhook server cannot listen."""
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"WEBHOOK_PORT: {where} is already in use (another lorabot, or another program, listens "
            "there); stop it or set WEBHOOK_PORT to a free port"
        )
    if error.errno == errno.EACCES:
        return (
            f"WEBHOOK_PORT: this user may not listen on {where} (ports below 1024 need privileges); "
            "set WEBHOOK_PORT to a port above 1023 and put a reverse proxy in front"
        )
    reason = error.strerror or str(error)
    return (
        f"WEBHOOK_HOST: cannot listen on {where} ({reason}); set WEBHOOK_HOST to an address of this "
        "machine, such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
    )


def image_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
        min_images=settings.min_images,
        max_images=settings.max_images,
    )


#: The outbox owner name of the only process on SQLite: the same across restarts, so a restarted
#: bot takes back at once the items it had claimed when it stopped.
SINGLE_PROCESS_OWNER = "lorabot"
#: With several processes, how long one keeps a server's settings before reading them again: a
#: server's interactions reach the process of its shard, so this only bounds how long a change
#: made on one process takes to reach a read from another (a Generate button in DMs).
SETTINGS_CACHE_SECONDS = 60.0


def leadership_for(stores: Stores, settings: Settings) -> Leadership:
    """SQLite has one process, which always leads; on PostgreSQL it is whoever holds the lock."""
    if stores.kind == "sqlite":
        return SingleProcessLeadership()
    return AdvisoryLockLeadership(settings.database_url)


class Application:
    """The running bot process. `run()` returns when a stop signal arrives."""

    stores: Stores
    db: StoreDatabase
    store: JobStore
    provider: ProviderClient
    bot: LoraBot
    notifier: Notifier
    service: JobService
    executor: ThreadPoolExecutor
    webhooks: WebhookServer
    reconciler: Reconciler

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        # Every background task runs under it: one that dies is logged and restarted, and
        # /healthz shows which keep dying.
        self.supervisor = Supervisor()
        # This application's own registry: several applications in one process (tests) don't clash.
        self.metrics = Metrics(process=True)
        self._logged_in = False
        #: Why the process stopped on its own (e.g. a rejected token); `run()` raises it at the end.
        self.fatal: ConfigError | None = None

    async def run(self) -> None:
        """Start everything, wait for SIGTERM / Ctrl-C, stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.stop_event.set)
        try:
            await self.start()
            await self.stop_event.wait()
            log.info("stopping: no more webhooks; finishing in-flight work")
        finally:
            await self.stop()
        if self.fatal is not None:
            raise self.fatal

    async def start(self) -> None:
        """Open the store, start the webhook server, recover, and connect to Discord in the background."""
        settings = self.settings
        redactor().add(settings.discord_token.get_secret_value(), settings.sdapi_key.get_secret_value())
        if settings.metrics_token is not None:
            redactor().add(settings.metrics_token.get_secret_value())
        point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
        self.stores = await open_stores(settings.database_url, migrate=True)
        self.db = self.stores.database
        self.store = self.stores.jobs
        self.single_process = self.stores.kind == "sqlite"
        self.provider = ProviderClient(
            settings.sdapi_base_url,
            settings.sdapi_key.get_secret_value(),
            timeout=settings.sdapi_timeout_seconds,
            submit_timeout=settings.sdapi_submit_timeout_seconds,
            metrics=self.metrics,
        )
        try:
            await self._check_provider()
        except ConfigError:
            await self.provider.aclose()
            await self.stores.close()
            del self.db
            raise
        self.bot = LoraBot(settings)
        self.server_settings = ServerSettings(
            self.stores.guild_settings,
            settings,
            # One process sees every change it makes; several refresh what another may have changed.
            cache_seconds=None if self.single_process else SETTINGS_CACHE_SECONDS,
        )
        messenger = Messenger(self.bot)
        self.generations = GenerationService(
            self.store,
            self.stores.generations,
            self.provider,
            settings,
            on_outbox=lambda: self.notifier.wake(),
            on_queued=lambda: self.generation_runner.wake(),
            server_settings=self.server_settings,
        )
        self.generation_runner = GenerationRunner(
            self.generations,
            spawn=lambda name, work: self.supervisor.spawn("generations", work, task_name=name),
            # Another process's /imagine cannot wake this runner: look often when several share the jobs.
            idle_wait=30.0 if self.single_process else 2.0,
        )
        self.notifier = Notifier(
            self.store,
            messenger,
            edit_interval=settings.card_edit_interval_seconds,
            pictures=PictureDelivery(self.store, self.generations, messenger),
            samples_deadline=settings.ready_samples_deadline_seconds,
            simulated=settings.simulated,
            metrics=self.metrics,
            owner=SINGLE_PROCESS_OWNER if self.single_process else process_identity(),
        )
        self.service = JobService(
            self.store,
            self.provider,
            settings,
            on_outbox=self.notifier.wake,
            metrics=self.metrics,
            server_settings=self.server_settings,
        )
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="images")
        cards = DiscordCardPoster(self.store, messenger, simulated=settings.simulated)
        self.bot.attach(
            Services(
                settings=settings,
                jobs=self.service,
                queries=JobQueries(self.store, self.provider),
                notifier=self.notifier,
                image_limits=image_limits(settings),
                starter=TrainingStarter(self.store, self.service, cards),
                generations=self.generations,
                server_settings=self.server_settings,
                executor=self.executor,
                supervisor=self.supervisor,
            ),
            memory=self.store,
        )
        self.webhooks = WebhookServer(
            self.service,
            self.store,
            database=self.db,
            max_body_bytes=settings.webhook_max_body_bytes,
            rate_per_minute=settings.webhook_rate_limit_per_minute,
            discord_status=self.bot.connection_status,
            tasks=self.supervisor.health,
            waiting_for=self._waiting_for,
            shards=self.bot.shard_health,
            mode=settings.mode,
            metrics=self.metrics if settings.metrics_enabled else None,
            metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
        )
        # A forgotten user's webhooks are unknown from then on (404), not answered from memory.
        self.service.add_forget_listener(self.webhooks.forget_owner)
        # Without PUBLIC_URL, polling is how jobs move: every active job, every POLL_INTERVAL_SECONDS.
        polling = settings.mode == "polling"
        self.reconciler = Reconciler(
            self.store,
            self.service,
            interval=settings.poll_interval_seconds if polling else settings.reconcile_interval_seconds,
            stall_deadline=settings.stall_deadline_seconds,
            preview_timeout=settings.preview_timeout_seconds,
            spread=polling,
            metrics=self.metrics,
        )
        self.leader = LeaderLoop(
            leadership_for(self.stores, settings),
            self.supervisor,
            {
                "reconciler": self.reconciler.run,
                "generation-runner": self.generation_runner.run,
                "settings-purge": self.server_settings.run_purge,
            },
            interval=settings.leader_interval_seconds,
        )
        self.webhooks.leader = self.leader.health
        try:
            await self.webhooks.start(settings.webhook_host, settings.webhook_port)
        except OSError as error:  # a busy port, an address not of this machine: the operator's to fix
            raise ConfigError(listen_error(settings.webhook_host, settings.webhook_port, error)) from None
        self._log_mode()
        # Only the one process of SQLite knows that every `submitting` job was interrupted; with
        # several processes, another may be submitting right now, and the reconciler settles the
        # ones whose process died once they are older than any live submission can be.
        settled = await self.service.recover_interrupted() if self.single_process else 0
        expired = await self.service.expire_stale_previews()
        if settled or expired:
            log.info("start-up recovery: %d interrupted submissions settled, %d previews expired", settled, expired)
        self.supervisor.supervise("discord", self._run_discord)
        # Everything imported and built so far lives as long as the process: move it out of the
        # collector's sight, so a full collection during a burst takes ~1 ms instead of ~100 ms.
        gc.collect()
        gc.freeze()

    def _log_mode(self) -> None:
        settings = self.settings
        if settings.mode == "polling":
            log.info(
                "mode: polling (PUBLIC_URL is not set): each active job is polled every %d s; no webhooks",
                settings.poll_interval_seconds,
            )
        else:
            log.info(
                "mode: webhooks to %s, and polling of jobs with no update for %d s",
                settings.webhook_base,
                settings.reconcile_interval_seconds,
            )
        if settings.simulated:
            log.info("simulated: the built-in simulator at %s stands in for the provider", settings.sdapi_base_url)

    async def _check_provider(self) -> None:
        """One read-only call to the provider before anything else starts.

        A base URL that answers a POST with a redirect the bot must not follow is a
        configuration error that stops the bot; anything else (the provider down, a bad key) is
        logged and the bot carries on, since the webhook server and Discord work without it.
        """
        try:
            await self.provider.probe(seconds=5.0)
        except ProviderMisconfigured as error:
            raise ConfigError(
                "Invalid configuration:\n"
                f"  - SDAPI_BASE_URL: {self.settings.sdapi_base_url} answers with a redirect "
                f"(HTTP {error.status_code}) to {error.location}, which would drop the request's body; "
                "set SDAPI_BASE_URL to the provider's current address"
            ) from None
        except InvalidApiKey:
            log.error("the provider refused SDAPI_KEY; trainings will fail until it is fixed")
        except ProviderError as error:
            log.warning("could not reach the provider at start-up (%s); carrying on", type(error).__name__)

    def _waiting_for(self) -> list[str]:
        """For /healthz: the parts not ready yet ("starting" until the first Discord session)."""
        return [] if self.bot.has_connected else ["discord"]

    async def stop(self) -> None:
        """Stop taking webhooks, let in-flight writes finish, close Discord and the database."""
        if not hasattr(self, "db"):
            return
        # Start-up may have failed half way: stop only what was started.
        if hasattr(self, "webhooks"):
            await self.webhooks.stop()
        await self.supervisor.stop()
        if hasattr(self, "bot") and not self.bot.is_closed():
            await self.bot.close()
        if hasattr(self, "provider"):
            await self.provider.aclose()
        if hasattr(self, "executor"):
            self.executor.shutdown(wait=True, cancel_futures=True)
        await self.stores.close()
        del self.db
        log.info("stopped cleanly")

    async def _run_discord(self) -> None:
        """Log in (retrying while Discord is unreachable), start the workers, stay connected.

        Supervised: if the connection dies with an error, this runs again and reconnects without
        logging in again. A rejected token is a deliberate stop: it returns, and is not restarted.
        """
        if not self._logged_in:
            if not await self._login():
                return
            self._logged_in = True
            self.supervisor.supervise("notifier", self.notifier.run)
            # Once-per-system work runs on the leader only (on SQLite, always this process).
            self.supervisor.supervise("leader", self.leader.run)
        try:
            await self.bot.connect(reconnect=True)
        except discord.ConnectionClosed as error:
            # Discord refused a shard for good (SHARD_COUNT / SHARD_IDS): a deliberate stop, like a bad token.
            refusal = gateway_refusal(error.code, error.shard_id, self.settings)
            if refusal is None:
                raise
            self.fatal = ConfigError(refusal)
            self.stop_event.set()

    async def _login(self) -> bool:
        """Log in, retrying while Discord is unreachable; False when Discord rejected the token."""
        bot = self.bot
        token = self.settings.discord_token.get_secret_value()
        delay = 1.0
        while True:
            try:
                await bot.login(token)
                return True
            except discord.LoginFailure:
                # A configuration error, not an outage: retrying cannot help. `run()` raises it.
                self.fatal = ConfigError(
                    "DISCORD_TOKEN: Discord rejected the bot token (401 Unauthorized); copy the token again "
                    "from the Discord Developer Portal (your application > Bot > Reset Token) into DISCORD_TOKEN"
                )
                self.stop_event.set()
                return False
            except (aiohttp.ClientError, discord.HTTPException, OSError, TimeoutError) as error:
                log.warning(
                    "cannot reach Discord at %s (%s); retrying in %.0f s",
                    urlsplit(self.settings.discord_api_base).netloc,
                    type(error).__name__,
                    delay,
                )
                # Each login attempt opens a new HTTP session: close it, and let the next attempt
                # build a fresh connector (closing the session closed this one too).
                await bot.http.close()
                bot.http.connector = discord.utils.MISSING
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
