"""Benchmark 4: the bot at rest. Start-up time to ready, and idle memory.

The real `lorabot run` (python -m bot run) starts in a subprocess against the fake Discord of
bot/discord_standin and the provider simulator, both served by this process. It is ready when the fake
sees a live gateway session (READY and GUILD_CREATE sent), its application commands are synced
(first start only: a restart with unchanged commands does not sync), and /healthz answers 200.
Then it idles for a while and its VmRSS is read from /proc/<pid>/status.

Baseline, same run, same fake: a bare discord.py `commands.Bot` (bench._bare_bot) until its
gateway session is live, and its idle RSS.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    ROOT,
    Row,
    Section,
    check,
    child_env,
    fmt_ratio,
    healthz_ok,
    median,
    ratio,
    spread,
    status_kib,
)

GUILD = 290926798626357999
CHANNEL = 645027906669510667
API_KEY = "sim-api-key-0123456789abcdef"
RSS_TARGET_MB = 80


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _fake() -> Any:
    from bot.discord_standin import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    fake.add_guild(GUILD, channels={CHANNEL: "general"})
    return fake


async def _one(kind: str, sim_url: str, workdir: Path, settle: float) -> dict[str, Any]:
    """Start one process (bare / bot / restart), time it to ready, let it idle, read its RSS."""
    fake = await _fake()
    port = _free_port()
    log_path = workdir / f"{kind}.log"
    if kind == "bare":
        import json

        argv = [
            PYTHON,
            "-m",
            "bench._bare_bot",
            json.dumps({"token": fake.token, "api_base": fake.api_base, "gateway_url": fake.gateway_url}),
        ]
        env = child_env()
    else:
        argv = [PYTHON, "-m", "bot", "run"]  # no .env in workdir: the environment only
        env = child_env(
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
        )
    marks: dict[str, float] = {}
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=workdir, stdout=log, stderr=log)
    try:
        deadline = started + 60
        while time.perf_counter() < deadline:
            now = time.perf_counter() - started
            if "session" not in marks and fake.gateway.live_sessions():
                marks["session"] = now
            if kind == "bot" and "commands" not in marks and fake.commands(GUILD):
                marks["commands"] = now
            if kind != "bare" and "healthz" not in marks and await healthz_ok(port):
                marks["healthz"] = time.perf_counter() - started
            wanted = {
                "bare": ("session",),
                "bot": ("session", "commands", "healthz"),
                "restart": ("session", "healthz"),
            }
            if all(k in marks for k in wanted[kind]):
                break
            if proc.returncode is not None:
                raise RuntimeError(f"{kind} exited early:\n{log_path.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.005)
        else:
            raise RuntimeError(f"{kind} not ready after 60 s:\n{log_path.read_text(errors='replace')[-3000:]}")
        ready = max(marks.values())
        samples = []
        settle_until = time.perf_counter() + settle
        while time.perf_counter() < settle_until:
            await asyncio.sleep(0.5)
            samples.append(status_kib(proc.pid, "VmRSS") or math.nan)
        return {
            "ready": ready,
            "marks": marks,
            "rss_mb": samples[-1] * 1024 / 1e6 if samples else math.nan,
            "rss_max_mb": max(samples) * 1024 / 1e6 if samples else math.nan,
            "hwm_mb": (status_kib(proc.pid, "VmHWM") or math.nan) * 1024 / 1e6,
        }
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await fake.close()


async def _run(quick: bool) -> dict[str, list[dict[str, Any]]]:
    import discord

    from bot.simulator.app import start_simulator

    sim = await start_simulator(step_seconds=5.0, api_key=API_KEY)
    rounds = 1 if quick else 3
    settle = 4.0 if quick else 10.0
    results: dict[str, list[dict[str, Any]]] = {"bare": [], "bot": [], "restart": []}
    try:
        for r in range(rounds):
            workdir = Path(tempfile.mkdtemp(prefix="lorabot-bench-startup-"))
            try:
                kinds = ["bare", "bot", "restart"] if r % 2 == 0 else ["bot", "restart", "bare"]
                for kind in kinds:
                    results[kind].append(await _one(kind, sim.url, workdir, settle))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        await sim.close()
        discord.http.Route.BASE = "https://discord.com/api/v10"
    return results


def _interpreter_rss() -> float:
    """RSS of a bare `python -c` that imports nothing: the floor under every figure here."""
    import subprocess

    proc = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(3)"], cwd=ROOT, env=child_env())
    try:
        time.sleep(1.0)
        return (status_kib(proc.pid, "VmRSS") or math.nan) * 1024 / 1e6
    finally:
        proc.kill()
        proc.wait()


def run(quick: bool) -> Section:
    section = Section("startup")
    results = asyncio.run(_run(quick))
    name = "4 at rest"
    bare_ready = [r["ready"] for r in results["bare"]]
    for kind, label in (
        ("bot", "start-up to ready, first start (migrations, command sync)"),
        ("restart", "start-up to ready, restart (commands unchanged)"),
    ):
        ready = [r["ready"] for r in results[kind]]
        paired = [ratio(a, b) for a, b in zip(ready, bare_ready, strict=True)]
        marks = results[kind][-1]["marks"]
        section.rows.append(
            Row(
                name,
                label,
                f"{median(ready):.2f} s",
                f"bare commands.Bot {median(bare_ready):.2f} s",
                fmt_ratio(median(paired)),
                "",
                None,
                f"median of {len(ready)}, range {spread(ready)} s; last run: "
                + ", ".join(f"{k} at {v:.3f} s" for k, v in sorted(marks.items(), key=lambda kv: kv[1])),
            )
        )
    rss = [r["rss_mb"] for r in results["bot"] + results["restart"]]
    bare_rss = [r["rss_mb"] for r in results["bare"]]
    section.rows.append(
        Row(
            name,
            "idle RSS after settling (VmRSS)",
            f"{median(rss):.1f} MB",
            f"bare commands.Bot {median(bare_rss):.1f} MB",
            fmt_ratio(ratio(median(rss), median(bare_rss))),
            f"< {RSS_TARGET_MB} MB",
            check(median(rss), RSS_TARGET_MB),
            f"range {spread(rss, '{:.1f}')} MB; peak during start-up (VmHWM) "
            f"{median([r['hwm_mb'] for r in results['bot']]):.1f} MB; bare interpreter {_interpreter_rss():.1f} MB",
        )
    )
    if os.environ.get("BENCH_KEEP_LOGS"):
        section.details.append(str(results))
    return section
