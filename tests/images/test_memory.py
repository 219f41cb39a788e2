"""Pixel caps must act on the header, before Pillow allocates the pixels.

tracemalloc cannot see Pillow's image buffers (they come from C malloc, not Python's allocator),
so this runs the checks in a fresh interpreter and reads its peak resident memory (ru_maxrss).
A control in the same process decodes one of the bombs for real, to prove the measurement would
notice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import corpus
from bot.images import ImageLimits, SourceImage, prepare_one
from PIL import Image
import io

def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)

def reset_peak():
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS. Else fall back to maxrss,
    # whose high-water mark may hide part of a later allocation.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kib("VmRSS"), "hwm"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "maxrss"

def peak_kib(method):
    if method == "hwm":
        return status_kib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

limits = ImageLimits()
cases = {
    "huge.jpg": corpus.jpeg_claiming(20000, 20000),  # 1.2 GB as RGB; Pillow's own ceiling
    "bomb.png": corpus.png_bomb(30000, 30000),        # 900 Mpx of genuine zeros in ~110 KB
    "bomb48.png": corpus.png_bomb(8000, 6000),        # 48 Mpx: only our 40 Mpx cap stops it
}
warm = corpus.photo_jpeg(640, 560, 1)
prepare_one(SourceImage("warm.jpg", None, len(warm)), warm, limits)
prepare_one(SourceImage("warm.png", None, 1), corpus.one_pixel_png(), limits)
base, method = reset_peak()
results = {}
started = time.perf_counter()
for name, data in cases.items():
    result = prepare_one(SourceImage(name, "image/png", len(data)), data, limits)
    results[name] = result.problem.value
elapsed = time.perf_counter() - started
growth = peak_kib(method) - base
base, method = reset_peak()
with Image.open(io.BytesIO(cases["bomb48.png"])) as img:
    img.load()
control = peak_kib(method) - base
print(json.dumps({
    "growth_kib": growth, "control_kib": control, "method": method, "results": results, "seconds": elapsed,
}))
"""


def test_pixel_bombs_are_refused_without_allocating_their_pixels():
    corpus_dir = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(corpus_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=corpus_dir.parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["results"] == {
        "huge.jpg": "too_many_pixels",
        "bomb.png": "too_many_pixels",
        "bomb48.png": "too_many_pixels",
    }
    assert report["growth_kib"] < 8 * 1024, report
    if report["method"] == "hwm":  # exact peak: decoding the 48 Mpx bomb for real costs ~46 MiB
        assert report["control_kib"] > 40 * 1024, report
    assert report["seconds"] < 1.0, report
