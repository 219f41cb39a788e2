"""Value types shared by the image pipeline."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    """Per file; checked before download from the declared size and again on the bytes."""
    max_pixels: int = 40_000_000
    """Checked from the header before any pixel is decoded (decompression-bomb guard)."""
    min_side: int = 512
    """Shorter side below this is refused: it would have to be upscaled for training."""
    output_size: int = 512
    min_images: int = 5
    max_images: int = 10


@dataclass(frozen=True, slots=True)
class SourceImage:
    """What the cog hands over per attachment, before downloading it."""

    filename: str
    declared_type: str | None
    """The attachment's content_type as Discord declared it."""
    declared_size: int
    """The attachment's declared size in bytes."""


class ImageProblem(Enum):
    EMPTY = "empty"
    TOO_LARGE_BYTES = "too_large_bytes"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    UNDECODABLE = "undecodable"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"

    @property
    def explanation(self) -> str:
        """A general sentence about the problem, for help texts and logs."""
        return _EXPLANATIONS[self]


_EXPLANATIONS: dict[ImageProblem, str] = {
    ImageProblem.EMPTY: "The file is empty (0 bytes).",
    ImageProblem.TOO_LARGE_BYTES: "The file is bigger than the size limit for one photo.",
    ImageProblem.NOT_AN_IMAGE: "The file is not an image (for example text, a PDF document or a video).",
    ImageProblem.UNSUPPORTED_FORMAT: (
        "The file is an image in a format that cannot be used for training (for example SVG, "
        "PSD or camera RAW). Upload JPEG, PNG, WebP or HEIC photos."
    ),
    ImageProblem.UNDECODABLE: "The image could not be decoded: it is truncated or corrupt.",
    ImageProblem.TOO_MANY_PIXELS: (
        "The image has more pixels than allowed (this limit also guards against decompression bombs)."
    ),
    ImageProblem.TOO_SMALL: "The image is smaller than the training size on its shorter side.",
}


@dataclass(frozen=True, slots=True)
class RejectedImage:
    filename: str
    problem: ImageProblem
    detail: str
    """A sentence fragment that follows the file name, e.g. "is 3.2 MB, over the 10 MB limit"."""

    @property
    def message(self) -> str:
        """One sentence naming the file, e.g. "cat.png is not an image (its contents are text)"."""
        return f"{display_name(self.filename)} {self.detail}"


@dataclass(frozen=True, slots=True)
class PreparedImage:
    filename: str
    data: bytes
    """The output_size x output_size RGB crop, encoded (JPEG quality 95, 4:4:4, no metadata)."""
    mime: str
    extension: str
    source_size: tuple[int, int]
    """The source's width and height as displayed (after EXIF orientation)."""
    digest: str
    """sha256 hex of data."""
    warnings: tuple[str, ...] = ()
    """Non-fatal notes about this image (first frame of an animation, declared type mismatch...)."""


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    images: tuple[PreparedImage, ...]
    rejected: tuple[RejectedImage, ...]
    warnings: tuple[str, ...]
    count_problem: str | None = None
    """Set when the number of usable images is outside [min_images, max_images]."""

    @property
    def ok(self) -> bool:
        return not self.rejected and self.count_problem is None and bool(self.images)


_MAX_NAME = 80


def display_name(filename: str) -> str:
    """The file name as shown in messages: control characters removed, length capped.

    Markdown escaping is left to the Discord layer, which escapes whole messages.
    """
    parts = []
    for ch in filename:
        category = unicodedata.category(ch)
        if category == "Cc" or category.startswith("Z"):
            parts.append(" ")  # newlines, tabs, exotic spaces
        elif not category.startswith("C"):  # drop format characters such as RTL overrides
            parts.append(ch)
    cleaned = "".join(parts)
    cleaned = " ".join(cleaned.split()) or "(unnamed file)"
    if len(cleaned) > _MAX_NAME:
        cleaned = cleaned[: _MAX_NAME - 1] + "…"
    return cleaned
