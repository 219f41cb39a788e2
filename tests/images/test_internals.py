"""Internals with behaviour worth pinning: crop choice, similarity, sniffing, formatting."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageDraw

from bot.images import ImageProblem, PreparedImage, SourceImage, prepare_one
from bot.images._decode import format_bytes, square_box
from bot.images._similar import edge_disagreement, fingerprint, near_duplicate
from bot.images._sniff import Refusal, sniff
from bot.images._types import ImageLimits, display_name

from . import corpus

SKIN = (224, 172, 140)


def flat(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (90, 110, 130))


def with_subject(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A textured patch with a skin-toned disc: what a person looks like to the saliency map."""
    x0, y0, x1, y1 = box
    rng = random.Random(3)
    patch = Image.frombytes("L", (x1 - x0, y1 - y0), rng.randbytes((x1 - x0) * (y1 - y0))).convert("RGB")
    img.paste(patch.resize((x1 - x0, y1 - y0)), (x0, y0))
    side = min(x1 - x0, y1 - y0) // 2
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    ImageDraw.Draw(img).ellipse((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2), fill=SKIN)
    return img


# --------------------------------------------------------------------------- crop


def test_flat_landscape_is_centre_cropped():
    assert square_box(flat(1200, 600)) == (300, 0, 900, 600)


def test_flat_portrait_is_cropped_slightly_above_centre():
    assert square_box(flat(600, 1200)) == (0, 240, 600, 840)


def test_square_is_untouched():
    assert square_box(flat(700, 700)) == (0, 0, 700, 700)


def test_subject_on_the_left_pulls_the_window_left():
    x0, _, x1, _ = square_box(with_subject(flat(1500, 600), (0, 100, 400, 500)))
    assert x0 <= 60 and x1 - x0 == 600


def test_subject_on_the_right_pulls_the_window_right():
    x0, _, _, _ = square_box(with_subject(flat(1500, 600), (1100, 100, 1500, 500)))
    assert x0 >= 840


def test_subject_at_the_top_of_a_tall_photo():
    _, y0, _, y1 = square_box(with_subject(flat(600, 1500), (100, 0, 500, 400)))
    assert y0 <= 60 and y1 - y0 == 600


def test_evenly_busy_image_stays_near_the_centre():
    img = corpus.photo_image(1200, 600, 4)
    noise = Image.frombytes("RGB", img.size, random.Random(1).randbytes(1200 * 600 * 3))
    x0, _, _, _ = square_box(noise)
    assert abs(x0 - 300) <= 120


def test_extreme_panorama_does_not_break_the_crop():
    box = square_box(with_subject(flat(6000, 520), (5000, 0, 5500, 520)))
    assert box[2] - box[0] == 520 and 0 <= box[0] <= 5480


# --------------------------------------------------------------------------- similarity


def test_flat_images_of_different_colours_are_not_duplicates():
    red, white = fingerprint(Image.new("RGB", (64, 64), "red")), fingerprint(Image.new("RGB", (64, 64), "white"))
    assert edge_disagreement(red, white) is None  # no edges: decided on colour alone
    assert not near_duplicate(red, white)
    assert near_duplicate(red, fingerprint(Image.new("RGB", (64, 64), (250, 5, 5))))


def test_mirrored_photo_is_not_a_duplicate():
    img = corpus.photo_image(512, 512, 9)
    assert not near_duplicate(fingerprint(img), fingerprint(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def test_brightened_copy_is_still_a_near_duplicate():
    from PIL import ImageEnhance

    img = corpus.photo_image(512, 512, 9)
    assert near_duplicate(fingerprint(img), fingerprint(ImageEnhance.Brightness(img).enhance(1.08)))


# --------------------------------------------------------------------------- sniffing


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + bytes(64)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        (ftyp(b"mif1", b"mif1", b"heic"), "HEIF"),
        (ftyp(b"avif", b"mif1", b"avif"), "AVIF"),
        (ftyp(b"mif1", b"avif", b"mif1"), "AVIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40), "WEBP"),
        (b"BM" + bytes(60), "BMP"),
        (b"II*\x00" + bytes(60), "TIFF"),
    ],
)
def test_sniff_recognises_supported_formats(data, expected):
    assert sniff(data, "x") == expected


@pytest.mark.parametrize(
    ("data", "name", "problem", "fragment"),
    [
        (ftyp(b"qt  ", b"qt  "), "IMG_0001.MOV", ImageProblem.NOT_AN_IMAGE, "is a video"),
        (ftyp(b"crx ", b"crx "), "IMG_0001.CR3", ImageProblem.UNSUPPORTED_FORMAT, "camera RAW"),
        (ftyp(b"M4A ", b"M4A "), "song.m4a", ImageProblem.NOT_AN_IMAGE, "audio"),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(40), "clip.avi", ImageProblem.NOT_AN_IMAGE, "video (AVI)"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(40), "a.wav", ImageProblem.NOT_AN_IMAGE, "audio"),
        (b"BMW photos list\n" * 5, "cars.bmp", ImageProblem.NOT_AN_IMAGE, "contents are text"),
        ("héllo wörld ".encode("utf-16"), "a.png", ImageProblem.NOT_AN_IMAGE, "contents are text"),
        (b"IIU\x00" + bytes(100), "P1000.RW2", ImageProblem.UNSUPPORTED_FORMAT, "camera RAW"),
        (b"\xff\x0a" + bytes(100), "a.jxl", ImageProblem.UNSUPPORTED_FORMAT, "JPEG XL"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(100), "a.jp2", ImageProblem.UNSUPPORTED_FORMAT, "JPEG 2000"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.png", ImageProblem.UNSUPPORTED_FORMAT, "SVG"),
    ],
)
def test_sniff_refusals(data, name, problem, fragment):
    result = sniff(data, name)
    assert isinstance(result, Refusal)
    assert result.problem is problem
    assert fragment in result.detail


def test_text_cut_inside_a_multibyte_character_is_still_text():
    data = ("a" * 4095 + "é" * 10).encode()
    result = sniff(data, "notes.png")
    assert isinstance(result, Refusal) and "contents are text" in result.detail


def test_heif_support_is_registered_lazily_and_once():
    data = corpus.heic()
    if data is None:
        pytest.skip("this pillow_heif build cannot encode HEIC")
    for _ in range(2):
        result = prepare_one(SourceImage("a.heic", None, len(data)), data, ImageLimits())
        assert isinstance(result, PreparedImage)


# --------------------------------------------------------------------------- formatting and corpus


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1 KB"), (1536, "1.5 KB"), (10 * 1024 * 1024, "10 MB")],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_display_name_of_empty_name():
    assert display_name("\n\t") == "(unnamed file)"


def test_corpus_bomb_is_a_genuine_stream():
    """The generated PNG bomb really inflates to every row of its claimed size."""
    width, height = 4000, 3000
    data = corpus.png_bomb(width, height)
    length = int.from_bytes(data[33:37], "big")
    stream = data[41 : 41 + length]
    inflater = zlib.decompressobj()
    total, pending = 0, stream
    while pending:
        total += len(inflater.decompress(pending, 1 << 22))
        pending = inflater.unconsumed_tail
    total += len(inflater.flush())
    assert inflater.eof
    assert total == height * (1 + (width + 7) // 8)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (width, height)
