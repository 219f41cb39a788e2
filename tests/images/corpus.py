"""A deterministic corpus of friendly and hostile images, generated in memory.

Nothing is downloaded and nothing binary is committed. Everything is cached per process, so the
suite pays for each file once. This module has no relative imports: the memory test runs it in a
subprocess as a top-level module. The photo-like pictures (`photo_image`, `photo_jpeg`) come
from `bot.demo.photos`, which `lorabot demo` uploads too.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from array import array
from typing import Any

from PIL import Image, ImageDraw

from bot.demo.photos import photo_image, photo_jpeg

RED = (230, 20, 20)
GREY = (128, 128, 128)


# --------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_from_parts(width: int, height: int, idat: bytes, *, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def zero_zlib_stream(total: int, chunk: int = 1 << 20) -> bytes:
    """A valid zlib stream inflating to `total` zero bytes, built in milliseconds.

    After a full flush deflate forgets its history, so each identical chunk compresses to the
    same bytes and can be repeated; the Adler-32 of n zeros is ((n % 65521) << 16) | 1.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat, rest = divmod(total, chunk)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = tail.compress(bytes(rest)) + tail.flush()
    adler = ((total % 65521) << 16) | 1
    return b"\x78\xda" + block * repeat + final + struct.pack(">I", adler)


@functools.cache
def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A genuine 1-bit greyscale PNG of width x height zeros (900 Mpx by default) in ~110 KB."""
    raw = height * (1 + (width + 7) // 8)  # one filter byte per row
    return png_from_parts(width, height, zero_zlib_stream(raw), bit_depth=1, colour_type=0)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB but whose data is a tiny stub."""
    return png_from_parts(width, height, zlib.compress(bytes(64)))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG with its SOF dimensions patched (e.g. 20000x20000 = 1.2 GB as RGB)."""
    data = bytearray(photo_jpeg(64, 64, 1))
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


# --------------------------------------------------------------------------- hostile


@functools.cache
def truncated_jpeg() -> bytes:
    good = photo_jpeg(800, 600, 11)
    return good[: len(good) // 2]


@functools.cache
def truncated_png() -> bytes:
    good = encode(photo_image(700, 600, 12), "PNG", compress_level=1)
    return good[: len(good) // 2]


def corrupt_jpeg_header() -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(random.Random(5).randbytes(2000))


def one_pixel_png() -> bytes:
    return encode(Image.new("RGB", (1, 1), RED), "PNG")


def small_jpeg() -> bytes:
    return photo_jpeg(300, 200, 13)


def svg() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="800">'
        b'<rect width="800" height="800" fill="red"/></svg>\n'
    )


def text_file() -> bytes:
    return "These are my holiday notes, not a picture. Café ☕\n".encode() * 20


def html_page() -> bytes:
    return b"<!DOCTYPE html><html><head><title>Photo</title></head><body>nope</body></html>"


def pdf() -> bytes:
    return b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(200)


def mp4() -> bytes:
    return struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2" + bytes(500)


def psd() -> bytes:
    return b"8BPS\x00\x01" + bytes(500)


@functools.cache
def dng() -> bytes:
    """A TIFF carrying the DNGVersion tag, as camera RAW files do."""
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[50706] = b"\x01\x04\x00\x00"
    info.tagtype[50706] = 1
    return encode(photo_image(800, 600, 14), "TIFF", tiffinfo=info)


# --------------------------------------------------------------------------- tricky but valid


@functools.cache
def animated(fmt: str) -> bytes:
    """Three 600x600 frames: red, green, blue (GIF, PNG = APNG, or WEBP)."""
    frames = [Image.new("RGB", (600, 600), c) for c in (RED, (20, 200, 20), (20, 20, 220))]
    for frame in frames:
        ImageDraw.Draw(frame).rectangle((250, 250, 350, 350), fill=(255, 255, 255))
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@functools.cache
def cmyk_jpeg() -> bytes:
    """Pure CMYK red (no cyan, full magenta and yellow) with a black band at the bottom."""
    img = Image.new("CMYK", (640, 640), (0, 255, 255, 0))
    ImageDraw.Draw(img).rectangle((0, 560, 640, 640), fill=(0, 0, 0, 255))
    return encode(img, "JPEG", quality=95)


@functools.cache
def png_16bit() -> bytes:
    """16-bit greyscale, a horizontal ramp 0..65535 (plain 8-bit conversion would clip it white)."""
    width, height = 640, 600
    row = array("H", (x * 65535 // (width - 1) for x in range(width)))
    pixels = row * height
    if pixels.itemsize != 2:
        raise AssertionError("unexpected array item size")
    img = Image.frombytes("I;16", (width, height), pixels.tobytes())
    return encode(img, "PNG")


@functools.cache
def palette_png_transparent() -> bytes:
    """Mode P, index 0 transparent (black in the palette), a red square of index 1 in the middle."""
    img = Image.new("P", (600, 600), 0)
    img.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    ImageDraw.Draw(img).rectangle((200, 200, 400, 400), fill=1)
    return encode(img, "PNG", transparency=0)


@functools.cache
def rgba_png() -> bytes:
    """Fully transparent black background, an opaque blue disc, a half-transparent green band."""
    img = Image.new("RGBA", (700, 700), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((250, 250, 450, 450), fill=(0, 0, 255, 255))
    draw.rectangle((0, 0, 700, 60), fill=(0, 255, 0, 128))
    return encode(img, "PNG")


@functools.cache
def la_png() -> bytes:
    img = Image.new("LA", (600, 600), (0, 0))
    ImageDraw.Draw(img).rectangle((200, 200, 400, 400), fill=(0, 255))
    return encode(img, "PNG")


@functools.cache
def exif_jpeg(width: int, height: int, orientation: int, marker: tuple[int, int]) -> bytes:
    """Grey image with a red marker in the stored top-left corner, an EXIF orientation and
    identifying EXIF fields (camera make, artist) that must not survive into the output."""
    img = Image.new("RGB", (width, height), GREY)
    ImageDraw.Draw(img).rectangle((0, 0, marker[0] - 1, marker[1] - 1), fill=RED)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    exif[0x013B] = "Jane Doe"
    return encode(img, "JPEG", quality=92, exif=exif.tobytes())


@functools.cache
def heic(width: int = 800, height: int = 600) -> bytes | None:
    """A HEIC photo, or None where this pillow_heif build cannot encode."""
    try:
        import pillow_heif

        buf = io.BytesIO()
        pillow_heif.from_pillow(photo_image(width, height, 21)).save(buf, format="HEIF", quality=60)
    except Exception:
        return None
    return buf.getvalue()


@functools.cache
def avif() -> bytes | None:
    try:
        return encode(photo_image(800, 600, 22), "AVIF", quality=80, speed=10)
    except Exception:
        return None


@functools.cache
def near_duplicates() -> tuple[bytes, bytes, bytes]:
    """One photo, the same re-encoded at quality 60, and the same resized to 92 %."""
    img = photo_image(1024, 768, 31)
    resized = img.resize((942, 707), Image.Resampling.LANCZOS)
    return (
        encode(img, "JPEG", quality=90),
        encode(img, "JPEG", quality=60),
        encode(resized, "JPEG", quality=88),
    )


@functools.cache
def large_png(width: int = 2200, height: int = 2100) -> bytes:
    """Big enough (shorter side >= 4 x 512) for the early box reduction; cheap to build."""
    gradient = Image.linear_gradient("L").resize((width, height))
    img = Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90).resize((width, height)), gradient)
    )
    return encode(img, "PNG", compress_level=1)


# Good photos of common aspect ratios: (name, width, height).
GOOD_SHAPES: tuple[tuple[str, int, int], ...] = (
    ("landscape_4x3.jpg", 1024, 768),
    ("portrait_3x4.jpg", 768, 1024),
    ("wide_16x9.jpg", 1280, 720),
    ("square.jpg", 800, 800),
    ("tall_9x16.jpg", 720, 1280),
    ("min_side_exact.jpg", 512, 700),
)


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def close(pixel: tuple[int, ...] | float | None, expected: tuple[int, ...], tolerance: int = 30) -> bool:
    assert isinstance(pixel, tuple), pixel
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))
