"""`lorabot demo`: one member's /train, from the command to the ready DM, with nothing real involved.

The real bot (`Application`: the same cogs, store, notifier, webhook server and workers as
`lorabot run`) runs against the Discord stand-in (`bot.discord_standin`: REST, CDN and gateway)
and the provider simulator, all on 127.0.0.1 with free ports, with a throwaway SQLite database in
a temporary directory and made-up credentials. The demo plays the member: it uploads five
generated photos to /train, presses Start on the preview, and follows the job to the ready DM,
printing each message as Discord would show it and writing an HTML transcript.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import discord
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bot.app import Application
from bot.config import Settings
from bot.demo.photos import sample_photos
from bot.demo.transcript import Names, Shot, changes_text, shoot, shot_text, status_of, transcript_html
from bot.discord_standin import FakeDiscord, FakeMessage, InteractionRecord
from bot.jobs.model import Job
from bot.logging_setup import setup_logging
from bot.simulator.app import RunningSimulator, start_simulator

GUILD = 1_300_000_000_000_000_001
CHANNEL = 1_300_000_000_000_000_002
MEMBER = 1_300_000_000_000_000_003
MEMBER_NAME = "alice"
# Made up: the stand-in and the simulator accept them, nothing else would.
DEMO_TOKEN = "demo-discord-token-not-a-secret"  # noqa: S105
DEMO_KEY = "demo-sdapi-key-not-a-secret"
INSTANCE_PROMPT = "photo of sks man"
CLASS_PROMPT = "photo of a man"
DEADLINE_SECONDS = 90.0

T = TypeVar("T")


class DemoSettings(Settings):
    """Settings from the demo's own values only: no environment variable and no .env file leaks in."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class DemoFailed(Exception):
    """The demo did not reach the ready DM; the message says where it stopped."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(directory: Path, fake: FakeDiscord, simulator_url: str) -> Settings:
    port = free_port()
    values: dict[str, Any] = {
        "discord_token": fake.token,
        "discord_api_base": fake.api_base,
        "discord_gateway_url": fake.gateway_url,
        "discord_guild_id": GUILD,
        "sdapi_key": DEMO_KEY,
        "sdapi_base_url": simulator_url,
        "sdapi_timeout_seconds": 10,
        "sdapi_submit_timeout_seconds": 10,
        "public_url": f"http://127.0.0.1:{port}",
        "webhook_host": "127.0.0.1",
        "webhook_port": port,
        "database_url": f"sqlite:///{directory / 'demo.db'}",
        "card_edit_interval_seconds": 0.1,
        "ready_samples": 0,
        "log_level": "WARNING",
    }
    return DemoSettings(**values)


class Demo:
    """Plays the member and records what they see."""

    def __init__(self, fake: FakeDiscord, out: Callable[[str], None]) -> None:
        self.fake = fake
        self.out = out
        self.shots: list[Shot] = []
        self.names = Names.of(fake)

    def show(self, message: FakeMessage, heading: str, *, show_pictures: bool = True) -> Shot:
        shot = shoot(self.fake, message, heading, show_pictures=show_pictures)
        self.shots.append(shot)
        self.out(shot_text(shot, self.names) + "\n")
        return shot

    def note(self, text: str) -> None:
        self.out(f">>> {text}\n")

    async def wait(self, probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:  # noqa: ASYNC109
        try:
            return await self.fake.wait_for(probe, timeout, what)
        except (TimeoutError, AssertionError) as error:
            raise DemoFailed(f"timed out waiting for {what}") from error

    async def play(self, app: Application) -> None:
        fake = self.fake
        photos = sample_photos(5)
        options: dict[str, Any] = {"instance_prompt": INSTANCE_PROMPT, "class_prompt": CLASS_PROMPT}
        for index, data in enumerate(photos, start=1):
            options[f"image{index}"] = fake.upload_attachment(data, f"photo{index}.jpg", "image/jpeg")
        self.note(
            f"{MEMBER_NAME} runs /train instance_prompt:{INSTANCE_PROMPT!r} class_prompt:{CLASS_PROMPT!r} "
            f"with {len(photos)} photos"
        )
        payload = fake.slash_command_payload(
            "train",
            user_id=MEMBER,
            guild_id=GUILD,
            channel_id=CHANNEL,
            options=options,
            attachments=[v for v in options.values() if isinstance(v, dict)],
        )
        command = await fake.send_interaction(payload)
        preview = await self.wait(
            lambda: command.original if command.original is not None and command.original.components else None,
            "the preview",
        )
        self.show(preview, "The preview (ephemeral: only the member sees it)")
        job_id = _job_id(preview)

        self.note(f"{MEMBER_NAME} presses Start")
        click = await fake.send_interaction(
            fake.component_payload(custom_id=f"lorabot:preview:start:{job_id}", message=preview, user_id=MEMBER)
        )
        await self.wait(lambda: click.callback, "Start to be acknowledged", timeout=10)

        job = await self.job_where(app, job_id, lambda j: j.card_message_id is not None, "the job card")
        assert job.card_message_id is not None
        card = fake.message(job.card_message_id)
        last = self.show(card, "The job card, posted in the channel at submission")
        await self.follow(app, job_id, card, command, last)

    async def job_where(self, app: Application, job_id: int, check: Callable[[Job], bool], what: str) -> Job:
        deadline = time.monotonic() + 30.0
        while True:
            job = await app.store.get_job(job_id)
            if job is not None and check(job):
                return job
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out waiting for {what}; the job is {job}")
            await asyncio.sleep(0.05)

    async def follow(
        self, app: Application, job_id: int, card: FakeMessage, command: InteractionRecord, last: Shot
    ) -> None:
        """Show each edit of the card (and the preview's last word) until the card says Model ready."""
        fake = self.fake
        deadline = time.monotonic() + DEADLINE_SECONDS
        preview_done = False

        def looks() -> tuple[int, str, str]:
            original = command.original
            return card.edit_count, card.text(), original.content if original is not None else ""

        shown = looks()[:2]
        while True:
            now = looks()
            if not preview_done and "Training submitted" in now[2] and command.original is not None:
                preview_done = True
                self.show(command.original, "The preview, edited once the training was submitted")
            if now[:2] != shown:
                shown = now[:2]
                shot = shoot(fake, card, "The job card, edited", show_pictures=False)
                if "Model ready" in status_of(shot, self.names):
                    break
                self.shots.append(shot)
                self.out(changes_text(last, shot, self.names) + "\n")
                last = shot
                job = await app.store.get_job(job_id)
                if job is not None and job.state.is_terminal:
                    raise DemoFailed(f"the job ended {job.state.label}: {job.last_error}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoFailed("the job did not reach Model ready in time")
            await self.wait(_changed_from(looks, now), "the card to change", timeout=left)
        self.show(card, "The job card at ready")
        dm = await self.wait(lambda: next(iter(fake.dms_to(MEMBER)), None), "the ready DM")
        self.show(dm, f"The DM to {MEMBER_NAME}")


def _changed_from(probe: Callable[[], T], before: T) -> Callable[[], bool | None]:
    return lambda: probe() != before or None


def _job_id(preview: FakeMessage) -> int:
    for custom_id in preview.custom_ids():
        if custom_id.startswith("lorabot:preview:start:"):
            return int(custom_id.rsplit(":", 1)[1])
    raise DemoFailed("the preview has no Start button")


async def run_demo(*, step_seconds: float = 0.3, out: Callable[[str], None] = print) -> Demo:
    """Start everything on loopback, play /train to the ready DM, and clean up; returns what was seen."""
    with tempfile.TemporaryDirectory(prefix="lorabot-demo-") as directory:
        fake = FakeDiscord(token=DEMO_TOKEN)
        simulator: RunningSimulator | None = None
        app: Application | None = None
        try:
            await fake.start()
            fake.add_guild(GUILD, name="Demo server", channels={CHANNEL: "general"})
            fake.add_user(MEMBER, username=MEMBER_NAME)
            fake.set_member(GUILD, MEMBER)
            simulator = await start_simulator(step_seconds=step_seconds, api_key=DEMO_KEY)
            settings = demo_settings(Path(directory), fake, simulator.url)
            out(
                f"Discord stand-in on {fake.url}, provider simulator on {simulator.url}, "
                f"webhooks on {settings.public_url}; a throwaway database in a temporary directory.\n"
            )
            app = Application(settings)
            await app.start()
            await fake.wait_until_connected(20)
            await fake.wait_for(lambda: fake.commands(GUILD) or None, 20, "the slash commands to be synced")
            demo = Demo(fake, out)
            await demo.play(app)
        finally:
            if app is not None:
                await app.stop()
            if simulator is not None:
                await simulator.close()
            await fake.close()
            discord.http.Route.BASE = "https://discord.com/api/v10"
    return demo


def main(out_path: str, step_seconds: float) -> int:
    """`lorabot demo`: exit status 0 once the ready DM arrived and the transcript is written."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    setup_logging("WARNING", [DEMO_TOKEN, DEMO_KEY])
    logging.getLogger("discord.client").setLevel(logging.ERROR)  # "PyNaCl is not installed": no voice here
    started = time.monotonic()
    try:
        demo = asyncio.run(run_demo(step_seconds=step_seconds, out=lambda text: print(text, flush=True)))
    except DemoFailed as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    intro = (
        "The real bot against a Discord stand-in and the provider simulator, all on loopback: "
        f"{MEMBER_NAME} runs /train with five generated photos, presses Start, and gets the ready DM."
    )
    target = Path(out_path)
    target.write_text(transcript_html("lorabot demo", intro, demo.shots, demo.names), encoding="utf-8")
    print(f"Done in {time.monotonic() - started:.0f} s. Transcript: {target.resolve()}")
    return 0
