"""Near-duplicate detection on the prepared crops.

A plain dHash treats two flat areas as "equal", so unrelated images with large plain regions
look alike. Here each horizontal step of a 17x16 greyscale thumbnail is ternary (brighter, darker,
flat within a small tolerance), and only steps where at least one of the two images has an edge
are compared. Colour is checked too (8x8 thumbnail), because the greyscale structure of a red
square on white and a black square on white is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from PIL import Image

_SIDE: Final = 16  # 16 rows x 16 steps = 256 ternary cells
_FLAT: Final = 3  # grey levels within which a step counts as flat (absorbs JPEG noise)
_MIN_EDGES: Final = 24  # fewer informative cells: both images are essentially flat
MAX_EDGE_DISAGREEMENT: Final = 0.25  # re-encodes and small resizes: < 0.1; unrelated photos: > 0.5
MAX_COLOUR_DIFFERENCE: Final = 20.0  # mean absolute difference of the 8x8 RGB thumbnails, 0-255


@dataclass(frozen=True, slots=True)
class Fingerprint:
    brighter: int
    darker: int
    colour: bytes


def fingerprint(img: Image.Image) -> Fingerprint:
    grey = img.convert("L").resize((_SIDE + 1, _SIDE), Image.Resampling.BOX).tobytes()
    brighter = darker = 0
    stride = _SIDE + 1
    for y in range(_SIDE):
        row = grey[y * stride : (y + 1) * stride]
        for x in range(_SIDE):
            step = row[x + 1] - row[x]
            brighter = (brighter << 1) | (step > _FLAT)
            darker = (darker << 1) | (step < -_FLAT)
    colour = img.convert("RGB").resize((8, 8), Image.Resampling.BOX).tobytes()
    return Fingerprint(brighter, darker, colour)


def colour_difference(a: Fingerprint, b: Fingerprint) -> float:
    return sum(abs(x - y) for x, y in zip(a.colour, b.colour, strict=True)) / len(a.colour)


def edge_disagreement(a: Fingerprint, b: Fingerprint) -> float | None:
    """Share of informative cells whose direction differs; None when both images are flat."""
    informative = (a.brighter | a.darker | b.brighter | b.darker).bit_count()
    if informative < _MIN_EDGES:
        return None
    differing = ((a.brighter ^ b.brighter) | (a.darker ^ b.darker)).bit_count()
    return differing / informative


def near_duplicate(a: Fingerprint, b: Fingerprint) -> bool:
    if colour_difference(a, b) > MAX_COLOUR_DIFFERENCE:
        return False
    disagreement = edge_disagreement(a, b)
    return disagreement is None or disagreement <= MAX_EDGE_DISAGREEMENT
