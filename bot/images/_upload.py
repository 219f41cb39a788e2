"""Fitting generated pictures into one Discord message (10 MiB for a bot's upload).

Four SDXL pictures as PNG can be 2-3 MB each, so a result can exceed the limit. The largest
pictures are re-encoded as JPEG (quality 92, then lower) until the whole set fits; pictures
already small enough are left untouched. CPU work: call it off the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

#: Quality steps tried, best first.
_QUALITIES = (92, 85, 75, 60)


def _as_jpeg(data: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def _jpeg_name(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{stem}.jpg"


def fit_for_upload(files: Sequence[tuple[str, bytes]], budget: int) -> list[tuple[str, bytes]]:
    """`files` re-encoded as needed so that their total size is at most `budget` bytes.

    Raises ValueError when even the lowest quality does not fit.
    """
    fitted = list(files)
    if sum(len(data) for _, data in fitted) <= budget:
        return fitted
    for quality in _QUALITIES:
        # Largest first: usually re-encoding one or two is enough.
        for index in sorted(range(len(fitted)), key=lambda i: -len(fitted[i][1])):
            name, data = files[index]
            fitted[index] = (_jpeg_name(name), _as_jpeg(data, quality))
            if sum(len(data) for _, data in fitted) <= budget:
                return fitted
    raise ValueError(f"{len(files)} picture(s) do not fit in {budget} bytes even as JPEG")
