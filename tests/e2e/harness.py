"""The end-to-end world: the real bot process wiring (`Application`) against a fake Discord on
loopback, the provider simulator over real HTTP, and the real webhook server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import discord

from bot.app import Application
from bot.config import Settings, load_settings
from bot.demo.photos import sample_photos
from bot.discord_standin import FakeDiscord, FakeMessage, InteractionRecord
from bot.jobs.model import Job
from bot.jobs.states import JobState
from bot.simulator.app import RunningSimulator, start_simulator
from tests.e2e.databases import database_url

GUILD = 290926798626357999
CHANNEL = 645027906669510667
ALICE = 53908232506183680
BOB = 53908232506183681
MANAGER = 53908232506183682
MANAGE_GUILD = 1 << 5
API_KEY = "sim-api-key-0123456789abcdef"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def photos(count: int, *, width: int = 900, height: int = 700, seed: int = 1) -> list[bytes]:
    """Distinct photo-like JPEGs (noise and gradients, so they are not near-duplicates)."""
    return sample_photos(count, width=width, height=height, seed=seed)


def make_settings(tmp_path: Path, fake: FakeDiscord, sim_url: str, **overrides: Any) -> Settings:
    port = free_port()
    values: dict[str, Any] = {
        "discord_token": fake.token,
        "discord_api_base": fake.api_base,
        "discord_gateway_url": fake.gateway_url,
        "discord_guild_id": GUILD,
        "sdapi_key": API_KEY,
        "sdapi_base_url": sim_url,
        "sdapi_timeout_seconds": 5,
        "sdapi_submit_timeout_seconds": 5,
        "public_url": f"http://127.0.0.1:{port}",
        "webhook_port": port,
        "database_url": database_url(tmp_path),
        "card_edit_interval_seconds": 0.05,
        "max_trainings_per_user_per_day": 0,
        "max_trainings_per_guild_per_day": 0,
        "max_active_jobs_per_user": 5,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@dataclass
class World:
    fake: FakeDiscord
    sim: RunningSimulator
    app: Application
    settings: Settings

    @property
    def store(self) -> Any:
        return self.app.store

    async def command(
        self,
        name: str,
        user_id: int = ALICE,
        *,
        options: dict[str, Any] | None = None,
        channel_id: int = CHANNEL,
        guild_id: int | None = GUILD,
        permissions: int | None = None,
        app_permissions: int | None = None,
    ) -> InteractionRecord:
        attachments = [v for v in (options or {}).values() if isinstance(v, dict) and "url" in v]
        payload = self.fake.slash_command_payload(
            name,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            options=options or {},
            attachments=attachments,
            permissions=permissions,
            app_permissions=app_permissions,
        )
        return await self.fake.send_interaction(payload)

    async def train(
        self, images: Sequence[bytes], user_id: int = ALICE, *, filenames: Sequence[str] = (), **options: Any
    ) -> InteractionRecord:
        opts: dict[str, Any] = {"instance_prompt": "photo of sks man", "class_prompt": "photo of a man", **options}
        for index, data in enumerate(images, start=1):
            name = filenames[index - 1] if index <= len(filenames) else f"photo{index}.jpg"
            content_type = "image/png" if name.endswith(".png") else "image/jpeg"
            opts[f"image{index}"] = self.fake.upload_attachment(data, name, content_type)
        return await self.command("train", user_id, options=opts)

    async def preview(
        self, images: Sequence[bytes], user_id: int = ALICE, **options: Any
    ) -> tuple[InteractionRecord, FakeMessage]:
        """Run /train and wait for the preview with its buttons."""
        rec = await self.train(images, user_id, **options)
        message = await rec.wait_original(lambda m: bool(m.components), timeout=20)
        return rec, message

    async def click(
        self, message: FakeMessage, custom_id: str, user_id: int = ALICE, **kwargs: Any
    ) -> InteractionRecord:
        payload = self.fake.component_payload(custom_id=custom_id, message=message, user_id=user_id, **kwargs)
        return await self.fake.send_interaction(payload)

    async def start_training(self, user_id: int = ALICE, images: Sequence[bytes] | None = None, **options: Any) -> Job:
        """/train, then Start; returns the job once it has a training id."""
        _rec, message = await self.preview(images if images is not None else photos(5), user_id, **options)
        job_id = job_id_of(message)
        click = await self.click(message, f"lorabot:preview:start:{job_id}", user_id)
        await click.wait_callback()
        return await self.wait_job(job_id, lambda j: j.training_id is not None or j.state.is_terminal)

    async def wait_job(self, job_id: int, check: Callable[[Job], bool], timeout: float = 20.0) -> Job:  # noqa: ASYNC109
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.app.store.get_job(job_id)
            if job is not None and check(job):
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"job {job_id} did not reach the expected state; now {job}")
            await asyncio.sleep(0.02)

    async def wait_state(self, job_id: int, state: JobState, timeout: float = 20.0) -> Job:  # noqa: ASYNC109
        return await self.wait_job(job_id, lambda j: j.state is state, timeout)

    async def wait_for(self, probe: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:  # noqa: ASYNC109
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = probe()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    def card(self, job: Job) -> FakeMessage:
        assert job.card_message_id is not None
        return self.fake.message(job.card_message_id)

    def posted_in(self, channel_id: int) -> list[FakeMessage]:
        """Messages the bot posted in a channel with its own token (not interaction responses)."""
        return [m for m in self.fake.channel_messages(channel_id) if m.webhook_id is None and not m.flags & 64]

    def dm_texts(self, user_id: int) -> list[str]:
        return [m.content for m in self.fake.dms_to(user_id)]


def job_id_of(preview: FakeMessage) -> int:
    for row in preview.components:
        for component in row.get("components", []):
            custom_id = component.get("custom_id", "")
            if custom_id.startswith("lorabot:preview:start:"):
                return int(custom_id.rsplit(":", 1)[1])
    raise AssertionError(f"no Start button on {preview.components}")


def train_payload(fake: FakeDiscord, count: int = 5) -> dict[str, Any]:
    """ALICE's /train in GUILD's CHANNEL with `count` photos, uploaded to the fake's CDN first (as the
    Discord client does before the command reaches the bot)."""
    options: dict[str, Any] = {"instance_prompt": "photo of sks man", "class_prompt": "photo of a man"}
    for index, data in enumerate(photos(count), start=1):
        options[f"image{index}"] = fake.upload_attachment(data, f"photo{index}.jpg", "image/jpeg")
    attachments = [v for v in options.values() if isinstance(v, dict)]
    return fake.slash_command_payload(
        "train", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL, options=options, attachments=attachments
    )


async def train_and_start(fake: FakeDiscord, count: int = 5) -> int:
    """/train through the fake (whichever process gets it), then Start; returns the job id."""
    rec = await fake.send_interaction(train_payload(fake, count))
    assert (await rec.wait_callback())["type"] == 5
    preview = await rec.wait_original(lambda m: bool(m.components), timeout=30)
    job_id = job_id_of(preview)
    click = await fake.send_interaction(
        fake.component_payload(custom_id=f"lorabot:preview:start:{job_id}", message=preview, user_id=ALICE)
    )
    await click.wait_callback()
    return job_id


def embed_text(message: FakeMessage) -> str:
    """Everything visible in a message's content and embeds, for assertions."""
    parts = [message.content or ""]
    for embed in message.embeds:
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f"{f.get('name')}: {f.get('value')}" for f in embed.get("fields", [])]
        parts.append((embed.get("footer") or {}).get("text", ""))
    return "\n".join(p for p in parts if p)


async def open_world(
    tmp_path: Path, *, step_seconds: float = 0.05, **overrides: Any
) -> tuple[World, Callable[[], Any]]:
    fake = FakeDiscord()
    await fake.start()
    fake.add_guild(GUILD, channels={CHANNEL: "general"})
    for user_id, name in ((ALICE, "alice"), (BOB, "bob"), (MANAGER, "manager")):
        fake.add_user(user_id, username=name)
        fake.set_member(GUILD, user_id, permissions=MANAGE_GUILD | 0x400 | 0x800 if user_id == MANAGER else None)
    sim = await start_simulator(step_seconds=step_seconds, api_key=API_KEY)
    settings = make_settings(tmp_path, fake, sim.url, **overrides)
    app = Application(settings)
    await app.start()
    # READY and the guilds are in: interactions are handled from here on. (on_ready itself comes
    # guild_ready_timeout = 2 s later; tests don't wait for it.)
    await fake.wait_until_connected(20)
    await fake.wait_for(lambda: fake.commands(GUILD) or None, 10, "commands synced")

    world = World(fake, sim, app, settings)

    async def close() -> None:
        await world.app.stop()  # the app a test may have replaced
        await sim.close()
        await fake.close()
        discord.http.Route.BASE = "https://discord.com/api/v10"

    return world, close


class BotProcess:
    """The real `lorabot run` in a subprocess, against the in-test fake Discord and simulator."""

    #: Every process started, so the e2e fixture can kill what a failed test left running.
    started: list[BotProcess] = []

    def __init__(self, tmp_path: Path, fake: FakeDiscord, sim_url: str, **env: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "bot.log"
        self.env = {
            **{k: v for k, v in __import__("os").environ.items() if not k.startswith(("DISCORD_", "SDAPI_"))},
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_GUILD_ID": str(GUILD),
            "SDAPI_KEY": API_KEY,
            "SDAPI_BASE_URL": sim_url,
            "SDAPI_TIMEOUT_SECONDS": "5",
            "SDAPI_SUBMIT_TIMEOUT_SECONDS": "5",
            "PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "WEBHOOK_PORT": str(self.port),
            "DATABASE_URL": database_url(tmp_path),
            "CARD_EDIT_INTERVAL_SECONDS": "0.05",
            "MAX_TRAININGS_PER_USER_PER_DAY": "0",
            "MAX_TRAININGS_PER_GUILD_PER_DAY": "0",
            "MAX_ACTIVE_JOBS_PER_USER": "5",
            "LOG_LEVEL": "DEBUG",
            **env,
        }
        self.cwd = tmp_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        """`lorabot run` with `args` after it."""
        import sys

        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", *args,  # no .env in the working directory: the environment only
            env=self.env, cwd=self.cwd, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        BotProcess.started.append(self)

    async def stop(self, sig: int = 15, timeout: float = 30) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        await self.stop(9)

    @classmethod
    async def kill_leftovers(cls) -> None:
        """SIGKILL every process still running (a test that failed before stopping its own)."""
        leftovers, cls.started = cls.started, []
        for bot in leftovers:
            if bot.proc is not None and bot.proc.returncode is None:
                await bot.kill()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def open_fakes(step_seconds: float = 0.05) -> tuple[FakeDiscord, RunningSimulator]:
    fake = FakeDiscord()
    await fake.start()
    fake.add_guild(GUILD, channels={CHANNEL: "general"})
    for user_id, name in ((ALICE, "alice"), (BOB, "bob")):
        fake.add_user(user_id, username=name)
        fake.set_member(GUILD, user_id)
    sim = await start_simulator(step_seconds=step_seconds, api_key=API_KEY)
    return fake, sim
