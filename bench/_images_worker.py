"""Image benchmark work, run in a fresh interpreter so that memory figures are its own.

    python -m bench._images_worker '{"task": "timing" | "loop", "files": {...}, ...}'

Prints one JSON line. Input files are read from disk (bench/.cache/images), never generated here,
so the corpus generator's own memory never counts.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from bot.images import ImageLimits, SourceImage, prepare_batch, prepare_batch_async

LIMITS = ImageLimits()


def status_kib(name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return -1


def load(paths: list[str]) -> list[tuple[SourceImage, bytes]]:
    items = []
    for path in paths:
        data = Path(path).read_bytes()
        kind = "image/png" if path.endswith(".png") else "image/jpeg"
        items.append((SourceImage(Path(path).name, kind, len(data)), data))
    return items


# --------------------------------------------------------------------------- the three pipelines


def floor(items: list[tuple[SourceImage, bytes]]) -> None:
    """Decode only: for JPEG with libjpeg's DCT scaling (draft), the cheapest possible decode."""
    for _, data in items:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (LIMITS.output_size, LIMITS.output_size))
            img.load()


def naive(items: list[tuple[SourceImage, bytes]]) -> None:
    """What a first version would do: full decode, ImageOps.fit with LANCZOS, encode."""
    size = LIMITS.output_size
    for _, data in items:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
        out = ImageOps.fit(rgb, (size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=95, subsampling=0)


def bot(items: list[tuple[SourceImage, bytes]]) -> None:
    batch = prepare_batch(items, LIMITS)
    if len(batch.images) != len(items):
        raise RuntimeError(f"the bot rejected inputs: {[r.message for r in batch.rejected]}")


PIPELINES = {"floor": floor, "naive": naive, "bot": bot}


def timing(options: dict[str, Any]) -> dict[str, Any]:
    """Each pipeline on each batch, `reps` times, in rotating order; seconds per batch of 10."""
    batches = {name: load(paths) for name, paths in options["files"].items()}
    bot(batches["jpeg"][:1])  # warm imports and caches (ICC, fonts of features.check...)
    out: dict[str, dict[str, list[float]]] = {b: {p: [] for p in PIPELINES} for b in batches}
    order = list(PIPELINES)
    for rep in range(options["reps"]):
        rotated = order[rep % len(order) :] + order[: rep % len(order)]
        for batch_name, items in batches.items():
            for name in rotated:
                started = time.perf_counter()
                PIPELINES[name](items)
                out[batch_name][name].append(time.perf_counter() - started)
    return {"seconds": out}


async def _loop_run(options: dict[str, Any]) -> dict[str, Any]:
    batches = {name: load(paths) for name, paths in options["files"].items()}
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="images")  # as bot.app does
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)

    # Idle lag first: what the ticker sees with nothing else running (the noise floor).
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(1.0)
    idle = list(lags)
    lags.clear()
    rss_before = status_kib("VmRSS")
    started = time.perf_counter()
    per_batch: dict[str, list[float]] = {}
    if options.get("concurrent"):
        results = await asyncio.gather(
            *(prepare_batch_async(items, LIMITS, executor=executor) for items in batches.values())
        )
    else:
        results = []
        for batch_name, items in batches.items():
            mark = len(lags)
            results.append(await prepare_batch_async(items, LIMITS, executor=executor))
            per_batch[batch_name] = lags[mark:]
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    executor.shutdown()
    prepared = sum(len(r.images) for r in results)
    return {
        "idle_lags": idle,
        "lags": lags,
        "per_batch_max": {k: max(v, default=0.0) for k, v in per_batch.items()},
        "elapsed": elapsed,
        "prepared": prepared,
        "rss_before_kib": rss_before,
        "hwm_kib": status_kib("VmHWM"),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main(options: dict[str, Any]) -> dict[str, Any]:
    if options["task"] == "timing":
        return timing(options)
    return asyncio.run(_loop_run(options))


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
