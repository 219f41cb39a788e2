"""prepare_one against the hostile corpus and the tricky-but-valid images."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable

import pytest
from PIL import Image

from bot.images import (
    ImageLimits,
    ImageProblem,
    PreparedImage,
    RejectedImage,
    SourceImage,
    _decode,
    prepare_one,
)

from . import corpus

LIMITS = ImageLimits()


def run(name: str, data: bytes, declared: str | None = None, limits: ImageLimits = LIMITS):
    return prepare_one(SourceImage(name, declared, len(data)), data, limits)


def rejected(name: str, data: bytes, declared: str | None = None, limits: ImageLimits = LIMITS) -> RejectedImage:
    result = run(name, data, declared, limits)
    assert isinstance(result, RejectedImage), result
    assert result.filename == name
    assert result.message.startswith(name + " "), result.message
    assert result.message == f"{name} {result.detail}"
    return result


def prepared(name: str, data: bytes, declared: str | None = None) -> PreparedImage:
    result = run(name, data, declared)
    assert isinstance(result, PreparedImage), getattr(result, "message", result)
    check_output(result)
    return result


def check_output(result: PreparedImage) -> Image.Image:
    img = corpus.decoded(result.data)
    assert img.format == "JPEG"
    assert img.size == (512, 512)
    assert img.mode == "RGB"
    assert result.mime == "image/jpeg"
    assert result.extension == "jpg"
    assert result.digest == hashlib.sha256(result.data).hexdigest()
    assert "exif" not in img.info
    assert not img.getexif()
    return img


HOSTILE: list[tuple[str, Callable[[], bytes], ImageProblem, str]] = [
    ("empty.jpg", lambda: b"", ImageProblem.EMPTY, "is an empty file (0 bytes)"),
    ("half.jpg", corpus.truncated_jpeg, ImageProblem.UNDECODABLE, "is a truncated or corrupt JPEG file"),
    ("half.png", corpus.truncated_png, ImageProblem.UNDECODABLE, "is a truncated or corrupt PNG file"),
    ("garbage.jpg", corpus.corrupt_jpeg_header, ImageProblem.UNDECODABLE, "is a truncated or corrupt JPEG"),
    ("bomb.png", corpus.png_bomb, ImageProblem.TOO_MANY_PIXELS, "claims to be 900 megapixels"),
    ("huge.jpg", lambda: corpus.jpeg_claiming(20000, 20000), ImageProblem.TOO_MANY_PIXELS, "400 megapixels"),
    ("big.png", lambda: corpus.png_claiming(8000, 6000), ImageProblem.TOO_MANY_PIXELS, "is 8000x6000 (48 megapixels)"),
    ("dot.png", corpus.one_pixel_png, ImageProblem.TOO_SMALL, "is 1x1, smaller than the 512x512 training size"),
    ("thumb.jpg", corpus.small_jpeg, ImageProblem.TOO_SMALL, "is 300x200, smaller than the 512x512 training size"),
    ("logo.svg", corpus.svg, ImageProblem.UNSUPPORTED_FORMAT, "is an SVG vector drawing"),
    ("notes.png", corpus.text_file, ImageProblem.NOT_AN_IMAGE, "is not an image (its contents are text)"),
    ("page.jpg", corpus.html_page, ImageProblem.NOT_AN_IMAGE, "is a web page (HTML)"),
    ("scan.png", corpus.pdf, ImageProblem.NOT_AN_IMAGE, "is a PDF document"),
    ("clip.jpg", corpus.mp4, ImageProblem.NOT_AN_IMAGE, "is a video"),
    ("layers.png", corpus.psd, ImageProblem.UNSUPPORTED_FORMAT, "is a Photoshop (PSD) file"),
    ("IMG_0001.tif", corpus.dng, ImageProblem.UNSUPPORTED_FORMAT, "is a camera RAW file"),
    ("random.bin", lambda: bytes(range(256)) * 8, ImageProblem.NOT_AN_IMAGE, "is not an image in a format"),
]


@pytest.mark.parametrize(("name", "make", "problem", "fragment"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_with_a_specific_message(name, make, problem, fragment):
    result = rejected(name, make(), "image/png")
    assert result.problem is problem
    assert fragment in result.detail
    assert problem.explanation


def test_every_problem_has_an_explanation():
    for problem in ImageProblem:
        assert problem.explanation.endswith(".")


def test_truncated_download_says_how_much_arrived():
    data = corpus.truncated_jpeg()
    result = prepare_one(SourceImage("cut.jpg", "image/jpeg", len(data) * 2), data, LIMITS)
    assert isinstance(result, RejectedImage)
    assert result.problem is ImageProblem.UNDECODABLE
    assert "arrived" in result.detail


def test_byte_cap_applies_to_the_bytes_too():
    data = corpus.photo_jpeg(1024, 768, 1)
    result = rejected("big.jpg", data, limits=ImageLimits(max_bytes=len(data) - 1))
    assert result.problem is ImageProblem.TOO_LARGE_BYTES
    assert "-byte limit" in result.detail  # just over: exact numbers instead of "N MB over N MB"
    result = rejected("big.jpg", data, limits=ImageLimits(max_bytes=50_000))
    assert result.detail.endswith("over the 48.8 KB limit")


def test_pixel_cap_is_ours_not_only_pillows():
    """1600x1200 passes Pillow's own ceiling easily; a 1-megapixel cap must still refuse it."""
    result = rejected("photo.jpg", corpus.photo_jpeg(1600, 1200, 2), limits=ImageLimits(max_pixels=1_000_000))
    assert result.problem is ImageProblem.TOO_MANY_PIXELS
    assert result.detail == "is 1600x1200 (1.9 megapixels), over the 1-megapixel limit"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_between_pillows_warning_and_error_is_refused():
    result = rejected("wide.png", corpus.png_claiming(10000, 9000))
    assert result.problem is ImageProblem.TOO_MANY_PIXELS


def test_pillow_bomb_warning_raised_as_error_is_caught():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rejected("wide.png", corpus.png_claiming(10000, 9000))
    assert result.problem is ImageProblem.TOO_MANY_PIXELS
    assert "90 megapixels" in result.detail


def test_unexpected_decoder_exception_becomes_a_rejection(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(_decode, "_to_rgb", explode)
    result = rejected("odd.jpg", corpus.photo_jpeg(800, 600, 3))
    assert result.problem is ImageProblem.UNDECODABLE


def test_undecodable_detail_for_decoder_errors_after_open(monkeypatch):
    monkeypatch.setattr(_decode, "square_box", lambda img: (_ for _ in ()).throw(ValueError("x")))
    result = rejected("odd.jpg", corpus.photo_jpeg(800, 600, 3))
    assert result.detail == "could not be read (unexpected decoder error)"


# --------------------------------------------------------------------------- valid but tricky


@pytest.mark.parametrize(("name", "width", "height"), corpus.GOOD_SHAPES, ids=[s[0] for s in corpus.GOOD_SHAPES])
def test_good_photos_of_any_aspect_become_512_squares(name, width, height):
    result = prepared(name, corpus.photo_jpeg(width, height, 7), "image/jpeg")
    assert result.source_size == (width, height)
    assert result.warnings == ()
    assert result.filename == name


def test_panorama_is_accepted_with_a_warning():
    result = prepared("pano.jpg", corpus.photo_jpeg(2000, 600, 8))
    assert result.warnings == ("pano.jpg is very wide (2000x600); only a square part of it was used",)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_uses_the_first_frame_and_warns(fmt):
    name = f"anim.{fmt.lower()}"
    result = prepared(name, corpus.animated(fmt))
    assert result.warnings == (f"{name} is animated; only its first frame was used",)
    img = corpus.decoded(result.data)
    assert corpus.close(img.getpixel((20, 20)), corpus.RED)  # frame 1 was red
    assert corpus.close(img.getpixel((256, 256)), (255, 255, 255))


def test_cmyk_jpeg_is_converted_to_rgb():
    img = corpus.decoded(prepared("print.jpg", corpus.cmyk_jpeg()).data)
    assert corpus.close(img.getpixel((256, 100)), (255, 0, 0), 40)
    assert corpus.close(img.getpixel((256, 505)), (0, 0, 0), 40)


def test_16_bit_png_is_rescaled_not_clipped():
    img = corpus.decoded(prepared("deep.png", corpus.png_16bit()).data)
    left, middle, right = (img.getpixel((x, 256)) for x in (3, 256, 508))
    assert corpus.close(left, (0, 0, 0), 15)
    assert corpus.close(middle, (128, 128, 128), 20)
    assert corpus.close(right, (255, 255, 255), 15)


@pytest.mark.parametrize(
    ("name", "make", "inside", "colour"),
    [
        ("palette.png", corpus.palette_png_transparent, (256, 256), corpus.RED),
        ("alpha.png", corpus.rgba_png, (256, 256), (0, 0, 255)),
        ("grey_alpha.png", corpus.la_png, (256, 256), (0, 0, 0)),
    ],
)
def test_transparency_is_flattened_onto_white(name, make, inside, colour):
    img = corpus.decoded(prepared(name, make()).data)
    assert corpus.close(img.getpixel((10, 500)), (255, 255, 255), 8)  # transparent black -> white
    assert corpus.close(img.getpixel(inside), colour, 40)


def test_half_transparent_band_is_blended_with_white():
    img = corpus.decoded(prepared("alpha.png", corpus.rgba_png()).data)
    assert corpus.close(img.getpixel((256, 10)), (127, 255, 127), 25)


def test_exif_orientation_6_rotates_square_image_clockwise():
    """The marker sits in the stored top-left corner; orientation 6 shows it top-right."""
    result = prepared("phone.jpg", corpus.exif_jpeg(800, 800, 6, (200, 200)))
    img = corpus.decoded(result.data)
    assert corpus.close(img.getpixel((480, 30)), corpus.RED)
    assert corpus.close(img.getpixel((30, 30)), corpus.GREY)
    assert corpus.close(img.getpixel((30, 480)), corpus.GREY)


def test_exif_orientation_6_swaps_reported_size_and_strips_metadata():
    result = prepared("phone.jpg", corpus.exif_jpeg(1000, 750, 6, (400, 300)))
    assert result.source_size == (750, 1000)
    img = check_output(result)
    assert corpus.close(img.getpixel((506, 5)), corpus.RED)
    assert b"TestCam" not in result.data
    assert b"Jane Doe" not in result.data


def test_small_rotated_image_reports_displayed_size():
    result = rejected("phone.jpg", corpus.exif_jpeg(400, 300, 6, (10, 10)))
    assert result.detail == "is 300x400, smaller than the 512x512 training size"


def test_declared_type_mismatch_is_a_warning_not_a_rejection():
    png = corpus.encode(corpus.photo_image(700, 600, 4), "PNG")
    result = prepared("photo.jpg", png, "image/jpeg")
    assert result.warnings == ("photo.jpg was declared as image/jpeg but is actually a PNG image; it was read as PNG",)


@pytest.mark.parametrize("declared", [None, "", "application/octet-stream", "image/jpg", "IMAGE/JPEG; q=1"])
def test_uninformative_or_equivalent_declared_types_do_not_warn(declared):
    assert prepared("photo.jpg", corpus.photo_jpeg(800, 600, 5), declared).warnings == ()


def test_heic_is_supported():
    data = corpus.heic()
    if data is None:
        pytest.skip("this pillow_heif build cannot encode HEIC")
    result = prepared("IMG_1234.HEIC", data, "image/heic")
    assert result.source_size == (800, 600)
    assert result.warnings == ()


def test_heic_without_pillow_heif_is_refused_clearly(monkeypatch):
    data = corpus.heic()
    if data is None:
        pytest.skip("this pillow_heif build cannot encode HEIC")
    monkeypatch.setattr(_decode, "_heif_available", lambda: False)
    result = rejected("IMG_1234.HEIC", data, "image/heic")
    assert result.problem is ImageProblem.UNSUPPORTED_FORMAT
    assert "HEIC support is not installed" in result.detail


def test_missing_optional_codec_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(_decode.features, "check_module", lambda name: False)
    data = corpus.encode(corpus.photo_image(640, 560, 6), "WEBP")
    result = rejected("photo.webp", data)
    assert result.problem is ImageProblem.UNSUPPORTED_FORMAT
    assert result.detail.startswith("is a WebP image, but WebP support is not available")


def test_avif_is_supported():
    data = corpus.avif()
    if data is None:
        pytest.skip("this Pillow build cannot encode AVIF")
    assert prepared("photo.avif", data, "image/avif").source_size == (800, 600)


@pytest.mark.parametrize(("fmt", "options"), [("BMP", {}), ("TIFF", {}), ("WEBP", {"quality": 90})])
def test_other_raster_formats(fmt, options):
    data = corpus.encode(corpus.photo_image(640, 560, 6), fmt, **options)
    assert prepared(f"photo.{fmt.lower()}", data).source_size == (640, 560)


@pytest.mark.parametrize("icc", [b"not a profile at all", b"\x00" * 200])
def test_broken_icc_profile_is_ignored(icc):
    data = corpus.encode(corpus.photo_image(640, 560, 6), "JPEG", icc_profile=icc)
    prepared("icc.jpg", data)


def test_srgb_icc_profile_keeps_colours():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.new("RGB", (600, 600), (40, 160, 90))
    result = prepared("icc.jpg", corpus.encode(img, "JPEG", quality=95, icc_profile=srgb))
    assert corpus.close(corpus.decoded(result.data).getpixel((256, 256)), (40, 160, 90), 4)


def test_greyscale_and_bilevel_images_become_rgb():
    grey = corpus.photo_image(640, 600, 9).convert("L")
    prepared("grey.jpg", corpus.encode(grey, "JPEG"))
    prepared("bw.png", corpus.encode(grey.convert("1"), "PNG"))


def test_large_png_is_reduced_before_conversion(monkeypatch):
    factors: list[int] = []
    original = Image.Image.reduce

    def spy(self, factor, box=None):
        factors.append(factor)
        return original(self, factor, box)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    assert prepared("big.png", corpus.large_png()).source_size == (2200, 2100)
    assert 2 in factors  # 2100 // 1024: decoded pixels are box-averaged before anything else


def test_control_characters_in_filenames_are_not_echoed():
    result = run("evil\n@everyone\u202egnp.jpg", b"")
    assert isinstance(result, RejectedImage)
    assert result.message == "evil @everyonegnp.jpg is an empty file (0 bytes)"
    long_name = "x" * 300 + ".jpg"
    assert len(run(long_name, b"").message) < 120


def test_output_is_deterministic():
    data = corpus.photo_jpeg(1024, 768, 12)
    assert run("a.jpg", data) == run("a.jpg", data)
