"""Photo-like sample pictures made with Pillow: what the demo uploads to /train, and what the tests use.

They have smooth colour blobs, a gradient, hard-edged shapes and fine grain, so JPEG cannot
compress them trivially and the perceptual hashes of different seeds differ (the bot refuses
near-duplicate photos).
"""

from __future__ import annotations

import functools
import io
import random

from PIL import Image, ImageDraw


def photo_image(width: int, height: int, seed: int) -> Image.Image:
    """Photo-like content: smooth colour blobs, a gradient, hard-edged shapes and fine grain, so
    that JPEG cannot compress it trivially and perceptual hashes of different seeds differ."""
    rng = random.Random(seed)
    sw, sh = max(2, width // 48), max(2, height // 48)
    blobs = Image.frombytes("RGB", (sw, sh), rng.randbytes(sw * sh * 3))
    img = blobs.resize((width, height), Image.Resampling.BICUBIC)
    gradient = Image.linear_gradient("L").rotate(rng.randrange(360)).resize((width, height))
    img = Image.blend(img, gradient.convert("RGB"), 0.3)
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(short // 20, short // 4)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r, x + r, y + r // 2), fill=colour)
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
    return Image.blend(img, grain, 0.08)


@functools.cache
def photo_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """`photo_image` as a JPEG (cached: the same arguments give the same bytes)."""
    buf = io.BytesIO()
    photo_image(width, height, seed).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def sample_photos(count: int = 5, *, width: int = 900, height: int = 700, seed: int = 1) -> list[bytes]:
    """`count` distinct photo-like JPEGs of slightly different sizes (not near-duplicates of each other)."""
    return [photo_jpeg(width + 37 * i, height + 23 * i, seed + 101 * i) for i in range(count)]
