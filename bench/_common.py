"""Shared helpers: statistics, the results table, process memory and CPU, machine facts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
PYTHON = sys.executable


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    items = [v for v in values if not math.isnan(v)]
    return statistics.median(items) if items else math.nan


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """ "min-max" of per-run values, for the notes column."""
    items = [v for v in values if not math.isnan(v)]
    if not items:
        return "n/a"
    return f"{fmt.format(min(items))}-{fmt.format(max(items))}"


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    """One figure of the results table.

    `passed` is True / False for a figure with a target, None for an informational one.
    """

    bench: str
    metric: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def status(self) -> str:
        return {True: "PASS", False: "MISS", None: "info"}[self.passed]


@dataclass
class Section:
    """What one benchmark hands back: rows for the table, plus free text (query plans, profiles)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


_HEADERS = ("Benchmark", "Metric", "Value", "Baseline (same run)", "Ratio", "Target", "Result")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.bench, row.metric, row.value, row.baseline, row.ratio, row.target, row.status)


def text_table(rows: Sequence[Row]) -> str:
    """A plain-text table; notes become numbered footnotes under it."""
    cells: list[tuple[str, ...]] = [_HEADERS]
    notes: list[str] = []
    for row in rows:
        line = _cells(row)
        if row.note:
            notes.append(f"  [{len(notes) + 1}] {row.note}")
            line = (*line[:-1], f"{line[-1]} [{len(notes)}]")
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADERS))]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + (["", *notes] if notes else []))


def markdown_table(rows: Sequence[Row]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(_HEADERS) + " | Notes |", "|" + "---|" * (len(_HEADERS) + 1)]
    for row in rows:
        status = f"**{row.status}**" if row.passed is False else row.status
        cells = [*map(esc, _cells(row)[:-1]), status, esc(row.note)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def check(value: float, limit: float, *, below: bool = True) -> bool | None:
    """PASS when value <= limit (or >= when below=False); None when the value is unknown."""
    if value is None or math.isnan(value):
        return None
    return value <= limit if below else value >= limit


def ms(seconds: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f} ms"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


# --------------------------------------------------------------------------- processes


def status_kib(pid: int | str, field_name: str) -> int | None:
    """A `VmRSS` / `VmHWM` style field of /proc/<pid>/status in KiB (None off Linux)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a process (children excluded), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed "tid:name" (from /proc/<pid>/task)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[f"{tid}:{name}"] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def relative_paths(text: str) -> str:
    """`text` (a log line, a traceback) with this machine's paths made relative: files of the
    repository as `bot/app.py`, installed packages under `site-packages/`, the standard library
    under `lib/python3.x/`, so that nothing machine-specific ends up in a report."""
    import sysconfig

    places = [(str(ROOT) + os.sep, "")]
    for key in ("purelib", "platlib"):
        place = sysconfig.get_paths().get(key)
        if place and not place.startswith(str(ROOT)):
            places.append((place + os.sep, "site-packages" + os.sep))
    stdlib = sysconfig.get_paths().get("stdlib")
    if stdlib:
        places.append((stdlib + os.sep, f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/"))
    for place, short in places:
        text = text.replace(place, short)
    return text


def child_env(**extra: str) -> dict[str, str]:
    """The environment for benchmark subprocesses: the repo importable, no stray bot settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SDAPI_", "WEBHOOK_", "DATABASE_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def run_json(module: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run `python -m module '<json>'` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [PYTHON, "-m", module, json.dumps(payload)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=child_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    mem = status_like("/proc/meminfo", "MemTotal")
    try:
        import sqlite3

        import aiohttp
        import asyncpg
        from PIL import __version__ as pillow

        versions = (
            f"SQLite {sqlite3.sqlite_version}, Pillow {pillow}, aiohttp {aiohttp.__version__}, "
            f"asyncpg {asyncpg.__version__}"
        )
    except ImportError:
        versions = ""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem / 1024 / 1024:.1f} GiB" if mem else "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "libraries": versions,
        "load": "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "",
    }


def source_hash() -> str:
    """A hash of the code under measurement (bot/, cogs/, both migrations), to notice edits mid-run."""
    digest = hashlib.sha256()
    for path in (
        sorted(ROOT.glob("bot/**/*.py")) + sorted(ROOT.glob("cogs/*.py")) + sorted(ROOT.glob("migrations/**/*.sql"))
    ):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def code_version() -> str:
    """The commit measured, which tracked files differed from it, and the source hash."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "bot", "cogs", "migrations"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return f"source hash {source_hash()} (not a git checkout)"
    files = [line[3:] for line in changed if line.strip()]
    dirty = f" with uncommitted changes to {', '.join(files)}" if files else ""
    return f"commit {head}{dirty} (source hash {source_hash()})"


def status_like(path: str, key: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def healthz_ok(port: int) -> bool:
    """Whether the bot on this loopback port answers GET /healthz with 200 (ready)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 2)
        return line.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
