"""Fitting generated pictures into one Discord upload."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from bot.images import fit_for_upload


def noisy_png(seed: int, side: int = 1024) -> bytes:
    """A PNG that compresses badly, like a real photo-like picture (about 3 MB at 1024x1024)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_pictures_that_fit_are_left_alone() -> None:
    files = [("a.png", b"x" * 100), ("SPOILER_b.png", b"y" * 100)]
    assert fit_for_upload(files, 1000) == files


def test_too_large_pictures_are_reencoded_as_jpeg_until_they_fit() -> None:
    files = [(f"SPOILER_p{i}.png" if i == 0 else f"p{i}.png", noisy_png(i)) for i in range(4)]
    budget = 10 * 1024 * 1024 - 512 * 1024
    assert sum(len(d) for _, d in files) > budget
    fitted = fit_for_upload(files, budget)
    assert sum(len(d) for _, d in fitted) <= budget
    assert len(fitted) == 4 and fitted[0][0].startswith("SPOILER_")
    for name, data in fitted:
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (1024, 1024)
            assert image.format == ("JPEG" if name.endswith(".jpg") else "PNG")


def test_an_impossible_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        fit_for_upload([("a.png", noisy_png(1, 256))], 100)
