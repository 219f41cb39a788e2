"""Benchmark 5: /imagine, from the command to the posted pictures, beside the simulator's own time.

The real `lorabot run` (python -m bot run) runs in a subprocess against the Discord stand-in
(bot/discord_standin) and the provider simulator, both served by this process on loopback, so
the memory figures are the bot's alone. A model is trained once through the real flow (/train, Start, the
simulator's 8 webhooks to the bot's webhook server, the ready DM); then the bot is restarted on
the same database, so its memory starts from a plain restart with one ready SDXL model.

Each round sends `/imagine prompt:... count:4` (1024x1024 on the SDXL base) through the fake's
gateway and waits for the result message with its 4 attachments to be stored by the fake. The
same round's simulator records give its own share: from the text2img request arriving to the
pictures being drawn (its PNG rendering; `t2i_processing_steps=0`, so text2img answers `success`
at once). "Bot adds" is the total minus that share: everything else the round took, the bot's
work (defer, database writes, the runner, downloading the 4 PNGs, storing them, the outbox, the
upload) plus the fake Discord's side of the interaction and of the upload, all on loopback.

A second, shorter series uses `t2i_processing_steps=1` with an ETA of 0.01 s: text2img answers
`processing`, and the bot fetches after its 2 s floor (`MIN_FETCH_WAIT`); that floor is a policy,
not overhead, so it is subtracted too.

Memory: the bot's VmRSS after the restart and a settle (its idle baseline), then its peak
(VmHWM) over the rounds. The peak is reset first (`/proc/<pid>/clear_refs`, Linux 4.0+) so that
start-up does not count; if that is refused, the peak since start is shown and the note says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import PYTHON, Row, Section, check, child_env, healthz_ok, ms, percentile, status_kib

GUILD = 290926798626357999
CHANNEL = 645027906669510667
ALICE = 53908232506183680
API_KEY = "sim-api-key-0123456789abcdef"
PICTURES = 4
BOT_ADDS_TARGET = 0.300  # seconds, at p50
RSS_TARGET_MB = 150
PROMPT = "on a beach at sunset, golden hour"
MESSAGES_ROUTE = "/channels/{channel_id}/messages"


def _mb(kib: float | None) -> float:
    return math.nan if kib is None else kib * 1024 / 1e6


@dataclass
class Round:
    """One /imagine, its timestamps on one wall clock (time.time()) of this process."""

    sent: float
    posted: float  # the result message with its 4 attachments is stored by the fake
    text2img_at: float  # the text2img request reached the simulator
    fetch_at: float | None  # the fetch that finished it (fetch path), else None
    drawn_at: float  # the simulator finished drawing the pictures
    downloads_at: float  # the first picture download reached the simulator
    upload_at: float  # the bot's POST of the result reached the fake Discord
    generation_seconds: float  # the simulator's own `generationTime` (PNG rendering)
    bot_generation: int  # the bot's generation id (from the request's track_id)
    stored_at: float | None = None  # the bot logged `-> ready`: pictures downloaded and stored
    rss_after_kib: int | None = None

    @property
    def total(self) -> float:
        return self.posted - self.sent

    @property
    def simulator(self) -> float:
        """The simulator's own processing: request in -> pictures drawn (for the fetch path, the
        finishing fetch in -> pictures drawn; its quick `processing` answer is not counted)."""
        return self.drawn_at - (self.fetch_at if self.fetch_at is not None else self.text2img_at)

    @property
    def scheduled_wait(self) -> float:
        """Fetch path: the time from text2img to the fetch (the bot's 2 s floor and its scheduling)."""
        return 0.0 if self.fetch_at is None else self.fetch_at - self.text2img_at

    def phases(self) -> dict[str, float]:
        start_of_sim = self.fetch_at if self.fetch_at is not None else self.text2img_at
        out = {"command -> text2img at the simulator": self.text2img_at - self.sent}
        if self.fetch_at is not None:
            out["text2img -> fetch at the simulator (2 s floor)"] = self.fetch_at - self.text2img_at
        out |= {
            "simulator drawing the pictures": self.drawn_at - start_of_sim,
            "drawn -> first picture download": self.downloads_at - self.drawn_at,
        }
        if self.stored_at is not None:
            out |= {
                "first download -> pictures stored (bot log)": self.stored_at - self.downloads_at,
                "stored -> result POST at the fake": self.upload_at - self.stored_at,
            }
        else:
            out["first download -> result POST at the fake"] = self.upload_at - self.downloads_at
        out["result POST -> stored by the fake (upload, parse)"] = self.posted - self.upload_at
        return out


@dataclass
class Results:
    job_id: int = 0
    idle_rss_kib: list[int] = field(default_factory=list)
    hwm_reset: bool = False
    hwm_after_main_kib: int | None = None
    hwm_after_all_kib: int | None = None
    hwm_start_kib: int | None = None
    hwm_after_photo_kib: int | None = None
    photo_bytes: list[int] = field(default_factory=list)
    warmup: Round | None = None
    main: list[Round] = field(default_factory=list)
    photo: list[Round] = field(default_factory=list)
    fetch: list[Round] = field(default_factory=list)
    log_tail: str = ""


class Bot:
    """`lorabot run` in a subprocess, pointed at the fake Discord and the simulator."""

    def __init__(self, workdir: Path, fake: Any, sim_url: str, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / "bot.log"
        self.env = child_env(
            DISCORD_TOKEN=fake.token,
            DISCORD_API_BASE=fake.api_base,
            DISCORD_GATEWAY_URL=fake.gateway_url,
            DISCORD_GUILD_ID=str(GUILD),
            SDAPI_KEY=API_KEY,
            SDAPI_BASE_URL=sim_url,
            PUBLIC_URL=f"http://127.0.0.1:{port}",
            WEBHOOK_PORT=str(port),
            DATABASE_URL=f"sqlite:///{workdir / 'bot.db'}",
            LOG_LEVEL="INFO",
            LOG_FORMAT="text",  # the `-> ready` times are read from it
            IMAGINE_COOLDOWN_SECONDS="0",
            MAX_PICTURES_PER_USER_PER_DAY="0",
            MAX_TRAININGS_PER_USER_PER_DAY="0",
            MAX_TRAININGS_PER_GUILD_PER_DAY="0",
        )
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                PYTHON, "-m", "bot", "run",  # no .env in workdir: the environment only
                env=self.env, cwd=self.workdir, stdout=log, stderr=log,
            )  # fmt: skip

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def log(self, chars: int = 3000) -> str:
        from bench._common import relative_paths

        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return relative_paths(text[-chars:])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until_ready(bot: Bot, fake: Any, *, commands: bool) -> None:
    """A live gateway session (and, on a first start, the commands synced), and /healthz 200."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        assert bot.proc is not None
        if bot.proc.returncode is not None:
            raise RuntimeError(f"the bot exited early:\n{bot.log()}")
        if fake.gateway.live_sessions() and (not commands or fake.commands(GUILD)) and await healthz_ok(bot.port):
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"the bot was not ready after 60 s:\n{bot.log()}")


async def _train(fake: Any) -> int:
    """/train through the fake, press Start, wait for the ready DM; returns the job id."""
    from bot.demo.photos import sample_photos

    photos = sample_photos(5)
    options: dict[str, Any] = {"instance_prompt": "photo of sks man", "class_prompt": "photo of a man"}
    for index, data in enumerate(photos, start=1):
        options[f"image{index}"] = fake.upload_attachment(data, f"photo{index}.jpg", "image/jpeg")
    attachments = [v for v in options.values() if isinstance(v, dict)]
    payload = fake.slash_command_payload(
        "train", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL, options=options, attachments=attachments
    )
    rec = await fake.send_interaction(payload)
    preview = await rec.wait_original(lambda m: bool(m.components), timeout=60)
    start = next(
        c["custom_id"]
        for row in preview.components
        for c in row.get("components", [])
        if c.get("custom_id", "").startswith("lorabot:preview:start:")
    )
    job_id = int(start.rsplit(":", 1)[1])
    click = await fake.send_interaction(
        fake.component_payload(custom_id=f"lorabot:preview:start:{job_id}", message=preview, user_id=ALICE)
    )
    await click.wait_callback()
    await fake.wait_for(
        lambda: [m for m in fake.dms_to(ALICE) if "is ready" in (m.content or "")] or None, 90, "the ready DM"
    )
    return job_id


def _is_result(message: Any, seen: set[int]) -> bool:
    return (
        message.channel_id == CHANNEL
        and message.id not in seen
        and message.webhook_id is None
        and not message.flags & 64
        and "· seed" in (message.content or "")
    )


async def _round(fake: Any, sim: Any, seen: set[int]) -> tuple[Round, Any]:
    """One /imagine count:4; returns its timings and the interaction (to wait for its note)."""
    loop = asyncio.get_running_loop()
    simulator = sim.simulator
    payload = fake.slash_command_payload(
        "imagine", user_id=ALICE, guild_id=GUILD, channel_id=CHANNEL, options={"prompt": PROMPT, "count": PICTURES}
    )
    first_record = len(simulator.requests)
    first_request = len(fake.requests)
    offset = time.time() - loop.time()  # the fake stamps requests with loop time
    sent = time.time()
    rec = await fake.send_interaction(payload)
    message = await fake.wait_for_message(lambda m: _is_result(m, seen), timeout=60)
    posted = time.time()
    seen.add(message.id)
    if len(message.attachments) != PICTURES:
        raise RuntimeError(f"the result has {len(message.attachments)} attachment(s): {message.content!r}")

    records = simulator.requests[first_record:]
    text2img = [r for r in records if r.endpoint == "text2img"]
    if len(text2img) != 1 or text2img[0].http_status != 200:
        raise RuntimeError(f"expected one accepted text2img call, got {[(r.path, r.http_status) for r in text2img]}")
    generation = simulator.generations_v6[int(text2img[0].request_id)]
    if generation.finished_at is None or generation.generation_time is None:
        raise RuntimeError(f"generation {generation.id} has not finished: {generation.status}")
    fetches = [r for r in records if r.endpoint == "images_fetch"]
    downloads = [r for r in records if r.endpoint == "image_download"]
    uploads = [
        r
        for r in fake.requests[first_request:]
        if r.method == "POST" and r.route == MESSAGES_ROUTE and len(r.files) == PICTURES
    ]
    if not downloads or not uploads:
        raise RuntimeError("no picture download or no upload recorded")
    result = Round(
        sent=sent,
        posted=posted,
        text2img_at=text2img[0].at,
        fetch_at=fetches[-1].at if fetches else None,
        drawn_at=generation.finished_at,
        downloads_at=min(r.at for r in downloads),
        upload_at=uploads[-1].time + offset,
        generation_seconds=generation.generation_time,
        bot_generation=int(str(generation.request.get("track_id", "-0")).rsplit("-", 1)[1]),
    )
    return result, rec


_READY_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO +bot\.jobs\.generations: generation (\d+): \w+ -> ready"
)


def _stored_times(log: str) -> dict[int, float]:
    """When the bot logged each generation's `-> ready` (pictures downloaded and stored): its log
    lines carry local wall-clock time to the millisecond, the clock this process stamps with."""
    out = {}
    for line in log.splitlines():
        match = _READY_LINE.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")  # local time, as logging writes it
            out[int(match[2])] = stamp.timestamp()
    return out


async def _settle_note(rec: Any) -> None:
    """Wait for the ephemeral note to say the pictures are posted (the cog looks every 2 s), so
    no round's follow-up work overlaps the next round."""
    await rec.wait_original(lambda m: "posted" in (m.content or ""), timeout=30)


def _photo_pngs(count: int = PICTURES) -> list[bytes]:
    """1024x1024 photo-like PNGs (bot/demo/photos.py `photo_image`), about 1.9 MB each, the size
    of a real SDXL picture, where the simulator's own (a gradient under coarse noise) are about
    0.1 MB."""
    import io

    from bot.demo.photos import photo_image

    out = []
    for index in range(count):
        buf = io.BytesIO()
        photo_image(1024, 1024, 4242 + index).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


@contextlib.contextmanager
def _simulator_draws(pictures: list[bytes]) -> Any:
    """Make the simulator (in this process) "draw" these pictures instead of its own."""
    import bot.simulator.images as sim_images

    original = sim_images.render_pngs

    def render_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
        return [pictures[index % len(pictures)] for index in range(count)]

    sim_images.render_pngs = render_pngs
    try:
        yield
    finally:
        sim_images.render_pngs = original


def _clear_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


async def _run(quick: bool) -> Results:
    import discord

    from bot.discord_standin import FakeDiscord
    from bot.simulator.app import start_simulator

    rounds = 5 if quick else 15
    photo_rounds = 3 if quick else 8
    fetch_rounds = 2 if quick else 5
    settle = 3.0 if quick else 8.0
    out = Results()

    fake = FakeDiscord()
    await fake.start()
    fake.add_guild(GUILD, channels={CHANNEL: "general"})
    fake.add_user(ALICE, username="alice")
    fake.set_member(GUILD, ALICE)
    sim = await start_simulator(step_seconds=0.05, api_key=API_KEY)
    workdir = Path(tempfile.mkdtemp(prefix="lorabot-bench-imagine-"))
    port = _free_port()
    bot = Bot(workdir, fake, sim.url, port)
    try:
        # A ready model, through the real flow, by a first process.
        await bot.start()
        await _until_ready(bot, fake, commands=True)
        out.job_id = await _train(fake)
        await bot.stop()

        # The measured process: a restart on the same database.
        bot = Bot(workdir, fake, sim.url, port)
        await bot.start()
        await _until_ready(bot, fake, commands=False)
        until = time.perf_counter() + settle
        while time.perf_counter() < until:
            await asyncio.sleep(0.5)
            out.idle_rss_kib.append(status_kib(bot.pid, "VmRSS") or 0)
        out.hwm_start_kib = status_kib(bot.pid, "VmHWM")
        out.hwm_reset = _clear_hwm(bot.pid)

        seen: set[int] = set()
        sim.simulator.set_faults(t2i_processing_steps=0)
        for index in range(1 + rounds):  # the first is a warm-up, not counted in the percentiles
            result, rec = await _round(fake, sim, seen)
            await _settle_note(rec)
            result.rss_after_kib = status_kib(bot.pid, "VmRSS")
            if index == 0:
                out.warmup = result
            else:
                out.main.append(result)
        out.hwm_after_main_kib = status_kib(bot.pid, "VmHWM")

        photos = await asyncio.to_thread(_photo_pngs)
        out.photo_bytes = [len(p) for p in photos]
        if out.hwm_reset:
            _clear_hwm(bot.pid)
        with _simulator_draws(photos):
            for _ in range(photo_rounds):
                result, rec = await _round(fake, sim, seen)
                await _settle_note(rec)
                result.rss_after_kib = status_kib(bot.pid, "VmRSS")
                out.photo.append(result)
        out.hwm_after_photo_kib = status_kib(bot.pid, "VmHWM")

        if out.hwm_reset:
            _clear_hwm(bot.pid)
        sim.simulator.set_faults(t2i_processing_steps=1, t2i_eta=0.01)
        for _ in range(fetch_rounds):
            result, rec = await _round(fake, sim, seen)
            await _settle_note(rec)
            result.rss_after_kib = status_kib(bot.pid, "VmRSS")
            out.fetch.append(result)
        out.hwm_after_all_kib = status_kib(bot.pid, "VmHWM")
        stored = _stored_times(bot.log(10_000_000))
        for done in (out.warmup, *out.main, *out.photo, *out.fetch):
            if done is not None:
                done.stored_at = stored.get(done.bot_generation)
        out.log_tail = "\n".join(
            line
            for line in bot.log(200_000).splitlines()
            if (" ERROR " in line or " WARNING " in line) and not any(noise in line for noise in _LOG_NOISE)
        )[-2000:]
    finally:
        await bot.stop()
        await sim.close()
        await fake.close()
        discord.http.Route.BASE = "https://discord.com/api/v10"
        shutil.rmtree(workdir, ignore_errors=True)
    return out


#: Warnings that say nothing about this benchmark: discord.py without voice support, and its
#: heartbeat bookkeeping race on loopback (the stand-in acks a heartbeat before discord.py's
#: keep-alive thread has noted the send, so an ack can look up to one interval, ~41 s, "behind").
_LOG_NOISE = ("voice will NOT be supported", "Can't keep up, shard ID")


def _p(values: list[float], p: float) -> float:
    return percentile(values, p)


def run(quick: bool) -> Section:
    section = Section("imagine")
    results = asyncio.run(_run(quick))
    name = "5 imagine"
    label = f"/imagine count:{PICTURES} 1024x1024 SDXL"
    main, photo, fetch = results.main, results.photo, results.fetch
    total = [r.total for r in main]
    simulator = [r.simulator for r in main]
    adds = [r.total - r.simulator for r in main]
    warm = results.warmup
    section.rows.append(
        Row(
            name,
            f"{label}: command to posted pictures, p50",
            ms(_p(total, 50), 0),
            f"simulator alone {ms(_p(simulator, 50), 0)}",
            "",
            "",
            None,
            f"{len(main)} rounds after 1 warm-up ({ms(warm.total, 0) if warm else 'n/a'}); p90 {ms(_p(total, 90), 0)}; "
            f"simulator p90 {ms(_p(simulator, 90), 0)}; t2i_processing_steps=0 (text2img answers success at once); "
            "the simulator's pictures are about 0.1 MB PNGs",
        )
    )
    section.rows.append(
        Row(
            name,
            f"{label}: time the bot adds (total - simulator), p50",
            ms(_p(adds, 50), 0),
            f"simulator alone {ms(_p(simulator, 50), 0)}",
            "",
            f"< {BOT_ADDS_TARGET * 1000:.0f} ms at p50",
            check(_p(adds, 50), BOT_ADDS_TARGET),
            f"p90 {ms(_p(adds, 90), 0)}, range {ms(min(adds), 0)}-{ms(max(adds), 0)}; includes the fake "
            "Discord's side (gateway dispatch, multipart parsing) and loopback transfers",
        )
    )
    if photo:
        p_adds = [r.total - r.simulator for r in photo]
        size = sum(results.photo_bytes) / len(results.photo_bytes) / 1e6
        section.rows.append(
            Row(
                name,
                f"{label}, photo-sized pictures ({PICTURES} x {size:.1f} MB PNG): time the bot adds, p50",
                ms(_p(p_adds, 50), 0),
                f"total {ms(_p([r.total for r in photo], 50), 0)}",
                "",
                f"< {BOT_ADDS_TARGET * 1000:.0f} ms at p50",
                check(_p(p_adds, 50), BOT_ADDS_TARGET),
                f"{len(photo)} rounds; the simulator hands out ready-made photo-like PNGs (the size of a real "
                f"SDXL picture) instead of drawing its own, so its part is ~0 "
                f"(p50 {ms(_p([r.simulator for r in photo], 50), 1)}); p90 {ms(_p(p_adds, 90), 0)}",
            )
        )
    if fetch:
        f_adds = [r.total - r.simulator - 2.0 for r in fetch]
        section.rows.append(
            Row(
                name,
                f"{label}, fetch path (processing, ETA 0.01 s): bot adds beyond the 2 s poll floor, p50",
                ms(_p(f_adds, 50), 0),
                f"total {ms(_p([r.total for r in fetch], 50), 0)}, "
                f"simulator {ms(_p([r.simulator for r in fetch], 50), 0)}",
                "",
                "",
                None,
                f"{len(fetch)} rounds, t2i_processing_steps=1; text2img to fetch p50 "
                f"{ms(_p([r.scheduled_wait for r in fetch], 50), 0)} (MIN_FETCH_WAIT: the bot never polls sooner "
                f"than 2 s, by design); total - simulator - 2 s; p90 {ms(_p(f_adds, 90), 0)}",
            )
        )
    idle = [_mb(k) for k in results.idle_rss_kib if k]
    idle_mb = idle[-1] if idle else math.nan
    peaks = {
        "simulator pictures": _mb(results.hwm_after_main_kib),
        "photo-sized": _mb(results.hwm_after_photo_kib),
        "fetch path": _mb(results.hwm_after_all_kib),
    }
    known = [v for v in peaks.values() if not math.isnan(v)]
    peak = max(known) if known else math.nan
    rounds = [r for r in (warm, *main, *photo, *fetch) if r is not None]
    after = [_mb(r.rss_after_kib) for r in rounds]
    section.rows.append(
        Row(
            name,
            f"peak RSS of the bot while posting {PICTURES} pictures (VmHWM)",
            f"{peak:.1f} MB",
            f"idle bot {idle_mb:.1f} MB",
            "" if math.isnan(peak - idle_mb) else f"+{peak - idle_mb:.1f} MB",
            f"< {RSS_TARGET_MB} MB",
            check(peak, RSS_TARGET_MB),
            (
                "peak reset (clear_refs) after the idle reading and before each series, so it covers only the rounds"
                if results.hwm_reset
                else "peak since the process started (clear_refs refused), so it includes start-up"
            )
            + "; peak per series: "
            + ", ".join(f"{k} {v:.1f} MB" for k, v in peaks.items())
            + f"; {len(rounds)} generations of {PICTURES}; VmRSS after each round "
            f"{min(after):.1f}-{max(after):.1f} MB; peak since start, before the rounds "
            f"{_mb(results.hwm_start_kib):.1f} MB",
        )
    )

    def phase_table(rounds: list[Round], title: str) -> str:
        names = list(rounds[0].phases())
        width = max(len(n) for n in names)
        lines = [title, f"  {'phase'.ljust(width)}  {'p50':>9}  {'p90':>9}"]
        for phase in [*names, "total"]:
            values = [r.total if phase == "total" else r.phases().get(phase, math.nan) for r in rounds]
            values = [v for v in values if not math.isnan(v)]
            lines.append(f"  {phase.ljust(width)}  {ms(_p(values, 50), 1):>9}  {ms(_p(values, 90), 1):>9}")
        return "\n".join(lines)

    section.details.append(
        phase_table(
            main, f"/imagine count:{PICTURES}, where the time goes ({len(main)} rounds, text2img answers success):"
        )
    )
    if photo:
        section.details.append(
            phase_table(photo, f"/imagine count:{PICTURES}, photo-sized pictures ({len(photo)} rounds):")
        )
    if results.fetch:
        section.details.append(
            phase_table(results.fetch, f"/imagine count:{PICTURES}, fetch path ({len(results.fetch)} rounds):")
        )
    if results.log_tail:
        section.details.append("Bot warnings and errors during the run:\n" + results.log_tail)
    return section


if __name__ == "__main__":
    from bench._common import text_table

    started = time.perf_counter()
    sec = run(quick=True)
    print(text_table(sec.rows))
    print("\n\n".join(sec.details))
    print(f"{time.perf_counter() - started:.1f} s")
