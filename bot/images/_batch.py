"""Public entry points: precheck, prepare_one, prepare_batch(_async), make_preview_grid."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import math
from collections.abc import Sequence
from typing import Final

from PIL import Image

from ._decode import Outcome, prepare, too_large_detail
from ._similar import Fingerprint, near_duplicate
from ._sniff import refuse_declared_type
from ._types import (
    ImageLimits,
    ImageProblem,
    PreparedBatch,
    PreparedImage,
    RejectedImage,
    SourceImage,
    display_name,
)

_GRID_MAX_BYTES: Final = 1_500_000
_GRID_BACKGROUND: Final = (24, 24, 24)


def precheck(source: SourceImage, limits: ImageLimits) -> RejectedImage | None:
    """Cheap checks on what Discord declared, before anything is downloaded.

    Only refuses what is clearly wrong; image/*, a missing type and octet-stream are decided on the
    bytes by prepare_one.
    """
    if source.declared_size == 0:
        return RejectedImage(source.filename, ImageProblem.EMPTY, "is an empty file (0 bytes)")
    if source.declared_size > limits.max_bytes:
        detail = too_large_detail(source.declared_size, limits.max_bytes)
        return RejectedImage(source.filename, ImageProblem.TOO_LARGE_BYTES, detail)
    refusal = refuse_declared_type(source.declared_type)
    if refusal is not None:
        return RejectedImage(source.filename, refusal.problem, refusal.detail)
    return None


def prepare_one(source: SourceImage, data: bytes, limits: ImageLimits) -> PreparedImage | RejectedImage:
    """Check and prepare one downloaded file. CPU-bound and synchronous: run it in an executor."""
    return prepare(source, data, limits).result


def _count_problem(usable: int, given: int, limits: ImageLimits) -> str | None:
    if usable < limits.min_images:
        if usable == given:
            given_text = "1 photo was" if usable == 1 else f"{usable} photos were"
            return f"Only {given_text} given; at least {limits.min_images} are needed."
        return f"Only {usable} of the {given} photos can be used; at least {limits.min_images} are needed."
    if usable > limits.max_images:
        return f"{usable} usable photos were given; at most {limits.max_images} can be used."
    return None


def _duplicate_warnings(outcomes: Sequence[Outcome]) -> list[str]:
    """One warning per image that repeats an earlier one (its first match only)."""
    warnings: list[str] = []
    seen: list[tuple[PreparedImage, Fingerprint]] = []
    for outcome in outcomes:
        image, print_ = outcome.result, outcome.fingerprint
        if not isinstance(image, PreparedImage) or print_ is None:
            continue
        for earlier, earlier_print in seen:
            name, other = display_name(image.filename), display_name(earlier.filename)
            if image.digest == earlier.digest:
                warnings.append(f"{name} is an exact copy of {other}")
                break
            if near_duplicate(print_, earlier_print):
                warnings.append(f"{name} looks like a near-duplicate of {other}")
                break
        seen.append((image, print_))
    return warnings


def prepare_batch(items: Sequence[tuple[SourceImage, bytes]], limits: ImageLimits) -> PreparedBatch:
    """prepare_one for each item, then near-duplicate and count checks. Synchronous and CPU-bound."""
    outcomes = [prepare(source, data, limits) for source, data in items]
    images = tuple(o.result for o in outcomes if isinstance(o.result, PreparedImage))
    rejected = tuple(o.result for o in outcomes if isinstance(o.result, RejectedImage))
    warnings = [w for image in images for w in image.warnings]
    warnings += _duplicate_warnings(outcomes)
    return PreparedBatch(
        images=images,
        rejected=rejected,
        warnings=tuple(warnings),
        count_problem=_count_problem(len(images), len(outcomes), limits),
    )


async def prepare_batch_async(
    items: Sequence[tuple[SourceImage, bytes]],
    limits: ImageLimits,
    *,
    executor: concurrent.futures.Executor | None = None,
) -> PreparedBatch:
    """prepare_batch in an executor (the loop's default thread pool unless given), so the event
    loop never runs Pillow. Everything passed is picklable, so a ProcessPoolExecutor works too."""
    snapshot = tuple(items)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, prepare_batch, snapshot, limits)


def make_preview_grid(images: Sequence[PreparedImage], *, tile: int = 256, columns: int = 5) -> bytes:
    """A JPEG contact sheet: tiles of tile x tile, left to right, min(columns, n) wide.

    Size is (min(columns, n) * tile) x (ceil(n / columns) * tile). Synchronous and CPU-bound.
    """
    if not images:
        raise ValueError("make_preview_grid needs at least one image")
    if tile < 1 or columns < 1:
        raise ValueError("tile and columns must be positive")
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile), _GRID_BACKGROUND)
    for index, prepared in enumerate(images):
        with Image.open(io.BytesIO(prepared.data), formats=("JPEG", "PNG")) as img:
            img.draft("RGB", (tile, tile))  # a 512 JPEG decodes straight to 256
            thumb = img.convert("RGB")
        if thumb.size != (tile, tile):
            thumb = thumb.resize((tile, tile), Image.Resampling.LANCZOS, reducing_gap=2.0)
        sheet.paste(thumb, ((index % cols) * tile, (index // cols) * tile))
    encoded = b""
    for quality in (85, 75, 60, 45):
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=quality)
        encoded = buf.getvalue()
        if len(encoded) <= _GRID_MAX_BYTES:
            break
    return encoded
