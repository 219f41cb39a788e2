"""Benchmark 2: image preparation for /train, from downloaded bytes to 512x512 crops.

Inputs: 10 photos of 12 megapixels (tests/images/corpus.py `photo_jpeg(4000, 3000, seed)`,
realistic detail, about 3.5 MB each) and 10 large PNGs (`large_png`, about 12 megapixels each),
generated once and cached in bench/.cache/images.

Baselines, same run and same process: the decode floor (Pillow's JPEG draft decode alone: open,
draft('RGB', (512, 512)), load; for PNG, which has no reduced decode, a plain full decode) and a
naive pipeline (full decode, ImageOps.fit with LANCZOS, JPEG encode). Then, each in a fresh
interpreter, `prepare_batch_async` on a running event loop with a 5 ms ticker measuring loop
lag, and the process's peak RSS.
"""

from __future__ import annotations

import math
import os
import sys

from bench._common import (
    CACHE,
    ROOT,
    Row,
    Section,
    check,
    fmt_ratio,
    median,
    ms,
    percentile,
    ratio,
    run_json,
    spread,
)

CORPUS_VERSION = "v1"


def corpus(count: int = 10) -> dict[str, list[str]]:
    """Write the input files once; returns {"jpeg": [...paths], "png": [...paths]}."""
    folder = CACHE / f"images-{CORPUS_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    jpegs = [folder / f"photo_{i:02d}_4000x3000.jpg" for i in range(count)]
    pngs = [folder / f"large_{i:02d}.png" for i in range(count)]
    if not all(p.exists() for p in jpegs + pngs):
        sys.path.insert(0, str(ROOT))
        from tests.images.corpus import large_png, photo_jpeg

        for i, path in enumerate(jpegs):
            if not path.exists():
                path.write_bytes(photo_jpeg(4000, 3000, 1000 + 7919 * i))
        for i, path in enumerate(pngs):
            if not path.exists():
                path.write_bytes(large_png(4000 - 40 * i, 3000 - 30 * i))
    return {"jpeg": [str(p) for p in jpegs], "png": [str(p) for p in pngs]}


def run(quick: bool) -> Section:
    section = Section("images")
    files = corpus()
    reps = 3 if quick else 7
    timing = run_json("bench._images_worker", {"task": "timing", "files": files, "reps": reps}, timeout=900)
    seconds = timing["seconds"]
    name = "2 images"
    sizes = {k: sum(os.path.getsize(p) for p in v) / 1e6 for k, v in files.items()}

    for batch, label in (("jpeg", "10 JPEG 12 MP"), ("png", "10 PNG ~12 MP")):
        bot, flo, nai = seconds[batch]["bot"], seconds[batch]["floor"], seconds[batch]["naive"]
        vs_floor = [ratio(b, f) for b, f in zip(bot, flo, strict=True)]
        vs_naive = [ratio(b, n) for b, n in zip(bot, nai, strict=True)]
        is_jpeg = batch == "jpeg"
        section.rows.append(
            Row(
                name,
                f"{label}: prepare_batch vs decode floor",
                ms(median(bot), 0),
                f"floor {ms(median(flo), 0)}",
                fmt_ratio(median(vs_floor)),
                "<= 1.5x floor" if is_jpeg else "",
                check(median(vs_floor), 1.5) if is_jpeg else None,
                f"{sizes[batch]:.1f} MB of input; median of {reps} paired reps, ratios {spread(vs_floor)}"
                + ("" if is_jpeg else "; PNG has no reduced decode, so its floor is a full decode"),
            )
        )
        section.rows.append(
            Row(
                name,
                f"{label}: prepare_batch vs naive Pillow",
                ms(median(bot), 0),
                f"naive {ms(median(nai), 0)}",
                fmt_ratio(median(vs_naive)),
                "<= 0.5x naive" if is_jpeg else "",
                check(median(vs_naive), 0.5) if is_jpeg else None,
                f"ratios {spread(vs_naive)}",
            )
        )

    runs = 1 if quick else 3
    loops = [run_json("bench._images_worker", {"task": "loop", "files": files}, timeout=600) for _ in range(runs)]
    both = run_json("bench._images_worker", {"task": "loop", "files": files, "concurrent": True}, timeout=600)
    max_lag = max(max(r["lags"], default=math.nan) for r in loops)
    idle_lag = max(max(r["idle_lags"], default=math.nan) for r in loops)
    p99_lag = median([percentile(r["lags"], 99) for r in loops])
    section.rows.append(
        Row(
            name,
            "event-loop lag, max, during prepare_batch_async (JPEG then PNG batch)",
            ms(max_lag, 1),
            f"idle loop {ms(idle_lag, 1)}",
            "",
            "< 50 ms",
            check(max_lag, 0.050),
            f"5 ms ticker; worst of {runs} fresh process(es); p99 {ms(p99_lag, 1)}; "
            f"both batches at once (2 users): max {ms(max(both['lags'], default=math.nan), 1)}",
        )
    )
    hwm = max(r["hwm_kib"] for r in loops) / 1024
    before = median([r["rss_before_kib"] for r in loops]) / 1024
    section.rows.append(
        Row(
            name,
            "peak RSS of a fresh process preparing both batches",
            f"{hwm:.0f} MiB",
            f"before preparing {before:.0f} MiB",
            "",
            "< 150 MB",
            check(hwm * 1024 * 1024, 150e6),
            "VmHWM of the worker process (not ru_maxrss, which Linux carries over from the forking parent); "
            "includes the interpreter, imports and the "
            f"{sum(sizes.values()):.0f} MB of input bytes; both batches at once: "
            f"{both['hwm_kib'] / 1024:.0f} MiB",
        )
    )
    elapsed = median([r["elapsed"] for r in loops])
    section.details.append(
        f"Images: prepare_batch_async of both batches took {elapsed:.2f} s on the loop's executor "
        f"(median of {runs}); per-rep batch seconds: "
        + "; ".join(f"{b}/{p}: " + ", ".join(f"{v:.2f}" for v in seconds[b][p]) for b in seconds for p in seconds[b])
    )
    return section
