"""precheck: decisions on Discord's declared type and size, before any download."""

from __future__ import annotations

import pytest

from bot.images import ImageLimits, ImageProblem, RejectedImage, SourceImage, precheck

LIMITS = ImageLimits()
MB = 1024 * 1024


@pytest.mark.parametrize(
    "declared",
    [
        "image/jpeg",
        "image/png",
        "image/heic",
        "image/heif",
        "image/webp",
        "image/gif",
        "image/avif",
        "image/x-unknown-but-still-image",
        "IMAGE/JPEG; charset=binary",
        None,
        "",
        "application/octet-stream",
        "binary/octet-stream",
    ],
)
def test_images_and_unknown_types_are_decided_on_the_bytes(declared):
    assert precheck(SourceImage("photo.jpg", declared, 2 * MB), LIMITS) is None


@pytest.mark.parametrize(
    ("declared", "problem", "fragment"),
    [
        ("text/plain", ImageProblem.NOT_AN_IMAGE, "is text (text/plain), not an image"),
        ("text/plain; charset=utf-8", ImageProblem.NOT_AN_IMAGE, "is text (text/plain)"),
        ("application/pdf", ImageProblem.NOT_AN_IMAGE, "is a PDF document, not an image"),
        ("image/svg+xml", ImageProblem.UNSUPPORTED_FORMAT, "is an SVG vector drawing"),
        ("video/mp4", ImageProblem.NOT_AN_IMAGE, "is a video (video/mp4), not a photo"),
        ("video/quicktime", ImageProblem.NOT_AN_IMAGE, "is a video"),
        ("audio/mpeg", ImageProblem.NOT_AN_IMAGE, "is an audio file"),
        ("application/zip", ImageProblem.NOT_AN_IMAGE, "is not an image (declared as application/zip)"),
        ("font/ttf", ImageProblem.NOT_AN_IMAGE, "is a font"),
    ],
)
def test_clearly_not_raster_types_are_refused(declared, problem, fragment):
    result = precheck(SourceImage("thing.png", declared, 1000), LIMITS)
    assert isinstance(result, RejectedImage)
    assert result.problem is problem
    assert fragment in result.detail
    assert result.message.startswith("thing.png ")


def test_zero_declared_size_is_empty():
    result = precheck(SourceImage("blank.jpg", "image/jpeg", 0), LIMITS)
    assert result == RejectedImage("blank.jpg", ImageProblem.EMPTY, "is an empty file (0 bytes)")


def test_declared_size_over_the_limit():
    result = precheck(SourceImage("huge.jpg", "image/jpeg", int(13.4 * MB)), LIMITS)
    assert isinstance(result, RejectedImage)
    assert result.problem is ImageProblem.TOO_LARGE_BYTES
    assert result.message == "huge.jpg is 13.4 MB, over the 10 MB limit"


def test_declared_size_just_over_the_limit_prints_exact_numbers():
    result = precheck(SourceImage("edge.jpg", "image/jpeg", 10 * MB + 1), LIMITS)
    assert isinstance(result, RejectedImage)
    assert result.detail == "is 10,485,761 bytes, over the 10,485,760-byte limit"


def test_declared_size_at_the_limit_passes():
    assert precheck(SourceImage("edge.jpg", "image/jpeg", 10 * MB), LIMITS) is None


def test_size_is_checked_before_type():
    result = precheck(SourceImage("movie.mp4", "video/mp4", 50 * MB), LIMITS)
    assert isinstance(result, RejectedImage)
    assert result.problem is ImageProblem.TOO_LARGE_BYTES
