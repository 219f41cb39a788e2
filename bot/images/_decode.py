"""Decoding, normalising and cropping one image (CPU-bound; never call on the event loop)."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from array import array
from dataclasses import dataclass
from typing import Final

from PIL import ExifTags, Image, ImageChops, ImageCms, ImageFilter, ImageOps, features

from ._similar import Fingerprint, fingerprint
from ._sniff import FORMATS, RAW_DETAIL, Refusal, declared_mismatch, sniff
from ._types import ImageLimits, ImageProblem, PreparedImage, RejectedImage, SourceImage, display_name

log = logging.getLogger(__name__)

OUTPUT_MIME: Final = "image/jpeg"
OUTPUT_EXTENSION: Final = "jpg"
_JPEG_QUALITY: Final = 95
_WHITE: Final = (255, 255, 255)
_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE_MODES: Final = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_OPTIONAL_CODECS: Final = {"WEBP": "webp", "AVIF": "avif"}  # Pillow builds may lack these
_NO_ANIMATION_WARNING: Final = frozenset({"HEIF", "JPEG"})  # multi-image HEIC and MPO are not animations


class _Refused(Exception):
    """Internal: carries a refusal out of the pipeline."""

    def __init__(self, problem: ImageProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Outcome:
    """prepare_one's result plus the fingerprint prepare_batch needs for near-duplicates."""

    result: PreparedImage | RejectedImage
    fingerprint: Fingerprint | None = None


# --------------------------------------------------------------------------- formatting


def format_bytes(n: int) -> str:
    """Human size with binary units, as Discord shows them ("3.2 MB", "10 MB", "512 KB")."""
    if n < 1024:
        return f"{n} bytes"
    unit, div = ("MB", 1024 * 1024) if n >= 1024 * 1024 else ("KB", 1024)
    return f"{f'{n / div:.1f}'.rstrip('0').rstrip('.')} {unit}"


def too_large_detail(n: int, limit: int) -> str:
    size, cap = format_bytes(n), format_bytes(limit)
    if size == cap:  # just over: rounding would print "10 MB, over the 10 MB limit"
        return f"is {n:,} bytes, over the {limit:,}-byte limit"
    return f"is {size}, over the {cap} limit"


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- HEIF


_heif_lock = threading.Lock()
_heif_state: bool | None = None


def _heif_available() -> bool:
    """Register pillow_heif's opener on first use (import costs ~50 ms; most uploads are JPEG)."""
    global _heif_state
    with _heif_lock:
        if _heif_state is None:
            try:
                import pillow_heif

                pillow_heif.register_heif_opener()
                _heif_state = True
            except Exception:  # ImportError, or a broken native library
                log.warning("HEIC support unavailable: pillow_heif could not be loaded", exc_info=True)
                _heif_state = False
        return _heif_state


# --------------------------------------------------------------------------- colour


_SRGB: Final = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_icc_lock = threading.Lock()
_icc_cache: dict[tuple[bytes, str], ImageCms.ImageCmsTransform | None] = {}
_MAX_ICC_BYTES: Final = 1 << 20


def _icc_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A cached transform from an embedded profile to sRGB; None when not needed or unusable.

    Built with NOCACHE so one transform can be shared between worker threads.
    """
    if not icc or len(icc) > _MAX_ICC_BYTES:
        return None
    key = (hashlib.sha256(icc).digest(), mode)
    with _icc_lock:
        if key in _icc_cache:
            return _icc_cache[key]
    transform: ImageCms.ImageCmsTransform | None = None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile) or ""
        if not (mode == "RGB" and "srgb" in description.lower()):
            transform = ImageCms.buildTransform(profile, _SRGB, mode, "RGB", flags=ImageCms.Flags.NOCACHE)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        transform = None  # malformed or mismatched profile: fall back to a plain conversion
    with _icc_lock:
        if len(_icc_cache) >= 64:
            _icc_cache.clear()
        _icc_cache[key] = transform
    return transform


def _apply_icc(img: Image.Image, icc: bytes | None) -> Image.Image:
    if not icc or img.mode not in ("RGB", "CMYK"):
        return img
    transform = _icc_transform(icc, img.mode)
    if transform is None:
        return img
    try:
        return ImageCms.applyTransform(img, transform) or img
    except (ImageCms.PyCMSError, ValueError, OSError):
        return img


def _scale_to_l(img: Image.Image, full_scale: float) -> Image.Image:
    """Map [0, full_scale] linearly to 8-bit L (plain convert("L") would clip 16-bit data)."""
    factor = 255.0 / full_scale if full_scale > 0 else 1.0
    return img.point(lambda v: v * factor).convert("L")


def _deep_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8 bits."""
    if img.mode.startswith("I;16"):
        return _scale_to_l(img.convert("I"), 65535.0)
    extrema = img.getextrema()
    lo, hi = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        return _scale_to_l(img, 1.0)
    if lo >= 0 and hi <= 255:
        return _scale_to_l(img, 255.0)
    if lo >= 0 and hi <= 65535:
        return _scale_to_l(img, 65535.0)
    shifted = img.point(lambda v: v - lo)
    return _scale_to_l(shifted, hi - lo)


def _to_rgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Any decoded mode to RGB: transparency flattened onto white, deep greyscale rescaled, CMYK
    through its ICC profile when it has one."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        return _deep_to_l(img).convert("RGB")
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        "transparency" in img.info and mode in ("1", "L", "P", "RGB")
    )
    if has_alpha:
        if mode == "La":
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        converted = _apply_icc(img, icc)
        return converted if converted.mode == "RGB" else img.convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


# --------------------------------------------------------------------------- crop


def _band_lut(lo: int, hi: int, value: int) -> list[int]:
    return [value if lo <= v <= hi else 0 for v in range(256)]


# Classic YCbCr skin-tone box; weight 64 against edge magnitudes that are mostly below ~60.
_SKIN_CB: Final = _band_lut(77, 127, 255)
_SKIN_CR: Final = _band_lut(133, 173, 64)
_THUMB: Final = 96
_PRIOR_WEIGHT: Final = 0.3
_PORTRAIT_TARGET: Final = 0.4  # people's faces sit above the middle of tall photos


def square_box(img: Image.Image) -> tuple[int, int, int, int]:
    """Choose the square window (side = shorter side) that keeps the most "subject".

    Saliency on a ~96 px thumbnail = edge energy + a skin-tone bonus, projected on the long axis;
    the window maximising its share of saliency wins, minus a quadratic penalty for moving away
    from the centre (slightly above centre for tall photos), so that flat or evenly busy images
    keep a centre crop. Costs well under a millisecond.
    """
    w, h = img.size
    side = min(w, h)
    slack = max(w, h) - side
    if slack == 0:
        return (0, 0, w, h)
    wide = w > h
    target = 0.5 if wide else _PORTRAIT_TARGET
    offset = round(slack * target)
    thumb = img.reduce(max(1, max(w, h) // _THUMB))  # box filter: cheap and fine for saliency
    tw, th = thumb.size
    scale = max(tw, th) / max(w, h)
    edges = thumb.convert("L").filter(ImageFilter.FIND_EDGES)
    edges = ImageOps.expand(ImageOps.crop(edges, 1), 1, 0)  # FIND_EDGES leaves its border unfiltered
    _, cb, cr = thumb.convert("YCbCr").split()
    skin = ImageChops.multiply(cb.point(_SKIN_CB), cr.point(_SKIN_CR))
    saliency = ImageChops.add(edges, skin).convert("F")
    profile_img = saliency.resize((tw, 1) if wide else (1, th), Image.Resampling.BOX)
    profile = array("f", profile_img.tobytes()).tolist()  # mode F is native float32
    total = sum(profile)
    n = len(profile)
    window = max(1, min(n, round(side * scale)))
    positions = n - window
    if total <= 1e-6 or positions <= 0:
        return _box(w, h, side, offset, wide)
    target_pos = positions * target
    best_score = float("-inf")
    best_pos = 0
    running = sum(profile[:window])
    for pos in range(positions + 1):
        if pos:
            running += profile[pos + window - 1] - profile[pos - 1]
        score = running / total - _PRIOR_WEIGHT * ((pos - target_pos) / positions) ** 2
        if score > best_score + 1e-9:
            best_score, best_pos = score, pos
    offset = max(0, min(slack, round(best_pos / positions * slack)))
    return _box(w, h, side, offset, wide)


def _box(w: int, h: int, side: int, offset: int, wide: bool) -> tuple[int, int, int, int]:
    return (offset, 0, offset + side, h) if wide else (0, offset, w, offset + side)


# --------------------------------------------------------------------------- pipeline


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF must not sink an otherwise good photo
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _too_many_pixels(w: int, h: int, limit: int) -> _Refused:
    return _Refused(
        ImageProblem.TOO_MANY_PIXELS,
        f"is {w}x{h} ({_megapixels(w * h)} megapixels), over the {_megapixels(limit)}-megapixel limit",
    )


def _bomb_refusal(exc: BaseException, limits: ImageLimits) -> _Refused:
    """Pillow refused (or warned about) the size itself, before we could read it."""
    ceiling = Image.MAX_IMAGE_PIXELS
    effective = min(limits.max_pixels, ceiling) if ceiling else limits.max_pixels
    match = _BOMB_PIXELS.search(str(exc))
    claimed = f"claims to be {_megapixels(int(match.group(1)))} megapixels" if match else "claims a size"
    return _Refused(
        ImageProblem.TOO_MANY_PIXELS,
        f"{claimed}, over the {_megapixels(effective)}-megapixel limit (possibly a decompression bomb)",
    )


def _corrupt(label: str, source: SourceImage, data: bytes) -> _Refused:
    detail = f"is a truncated or corrupt {label} file"
    if 0 < len(data) < source.declared_size:
        detail += f" (only {format_bytes(len(data))} of {format_bytes(source.declared_size)} arrived)"
    return _Refused(ImageProblem.UNDECODABLE, detail)


def _render(source: SourceImage, data: bytes, limits: ImageLimits) -> tuple[Image.Image, tuple[int, int], list[str]]:
    """Header checks, then a bounded decode, crop and resize.

    Returns the output_size square RGB image, the source size as displayed, and warnings.
    """
    name = display_name(source.filename)
    sniffed = sniff(data, source.filename)
    if isinstance(sniffed, Refusal):
        raise _Refused(sniffed.problem, sniffed.detail)
    fmt = sniffed
    label = FORMATS[fmt][0]
    if fmt == "HEIF" and not _heif_available():
        raise _Refused(
            ImageProblem.UNSUPPORTED_FORMAT,
            "is a HEIC photo, but HEIC support is not installed on this bot; export it as JPEG "
            "(on an iPhone: Settings > Camera > Formats > Most Compatible)",
        )
    if fmt in _OPTIONAL_CODECS and not features.check_module(_OPTIONAL_CODECS[fmt]):
        raise _Refused(
            ImageProblem.UNSUPPORTED_FORMAT,
            f"is a {label} image, but {label} support is not available on this bot; export it as JPEG or PNG",
        )
    warnings: list[str] = []
    if declared_mismatch(source.declared_type, fmt):
        declared = (source.declared_type or "").split(";")[0].strip()[:60]
        warnings.append(f"{name} was declared as {declared} but is actually a {label} image; it was read as {label}")

    try:
        opened = Image.open(io.BytesIO(data), formats=(fmt,))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_refusal(exc, limits) from None
    except Exception as exc:
        log.debug("open failed for %r: %r", source.filename, exc)
        raise _corrupt(label, source, data) from None

    with opened as img:
        # Everything up to here read only the header: refuse on its numbers before decoding.
        w, h = img.size
        if w * h > limits.max_pixels:
            raise _too_many_pixels(w, h, limits.max_pixels)
        orientation = _orientation(img)
        shown = (h, w) if orientation >= 5 else (w, h)
        if min(w, h) < limits.min_side:
            raise _Refused(
                ImageProblem.TOO_SMALL,
                f"is {shown[0]}x{shown[1]}, smaller than the {limits.min_side}x{limits.min_side} training size",
            )
        if fmt == "TIFF" and 50706 in getattr(img, "tag_v2", {}):  # DNGVersion: a RAW in disguise
            raise _Refused(ImageProblem.UNSUPPORTED_FORMAT, RAW_DETAIL)
        icc = img.info.get("icc_profile")
        icc = icc if isinstance(icc, bytes) else None
        if fmt == "JPEG":
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: far less work and memory.
            img.draft("RGB", (limits.output_size, limits.output_size))
        try:
            img.load()
            frame: Image.Image = img
            factor = min(frame.size) // (2 * limits.output_size)
            if factor >= 2 and frame.mode in _REDUCIBLE_MODES:
                frame = frame.reduce(factor)  # box-average early so conversions touch fewer pixels
            source_mode = frame.mode
            rgb = _to_rgb(frame, icc)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_refusal(exc, limits) from None
        except MemoryError:
            raise _Refused(ImageProblem.UNDECODABLE, "could not be decoded: it needs too much memory") from None
        except Exception as exc:
            log.debug("decode failed for %r: %r", source.filename, exc)
            raise _corrupt(label, source, data) from None

        if orientation != 1:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
        size = limits.output_size
        # After DCT-domain scaling the remaining factor is below 2, where bicubic looks the same as
        # Lanczos and costs a third less; other formats may shrink a lot, so they get Lanczos.
        resample = Image.Resampling.BICUBIC if fmt == "JPEG" else Image.Resampling.LANCZOS
        out = rgb.resize((size, size), resample, box=square_box(rgb), reducing_gap=2.0)
        if source_mode != "CMYK":  # CMYK went through its profile in _to_rgb already
            out = _apply_icc(out, icc)

        # Only now, with the output detached from the file, look past the first frame.
        if fmt not in _NO_ANIMATION_WARNING:
            try:
                animated = bool(getattr(img, "is_animated", False))
            except Exception:
                animated = True
            if animated:
                what = (
                    "has several pages; only the first page" if fmt == "TIFF" else "is animated; only its first frame"
                )
                warnings.append(f"{name} {what} was used")

    if max(shown) > 2 * min(shown):
        warnings.append(
            f"{name} is very {'wide' if shown[0] > shown[1] else 'tall'} ({shown[0]}x{shown[1]}); "
            "only a square part of it was used"
        )
    return out, shown, warnings


def prepare(source: SourceImage, data: bytes, limits: ImageLimits) -> Outcome:
    """The whole per-image pipeline; never raises for bad input."""

    def reject(problem: ImageProblem, detail: str) -> Outcome:
        return Outcome(RejectedImage(source.filename, problem, detail))

    if not data:
        return reject(ImageProblem.EMPTY, "is an empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        return reject(ImageProblem.TOO_LARGE_BYTES, too_large_detail(len(data), limits.max_bytes))
    try:
        out, source_size, warnings = _render(source, data, limits)
    except _Refused as refused:
        return reject(refused.problem, refused.detail)
    except Exception:  # last resort: hostile input must never take the batch down
        log.exception("unexpected failure preparing %r", source.filename)
        return reject(ImageProblem.UNDECODABLE, "could not be read (unexpected decoder error)")

    out.info.clear()  # belt and braces: no metadata from the source may reach the output
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=_JPEG_QUALITY, subsampling=0)  # no EXIF (GPS!) is carried over
    encoded = buf.getvalue()
    prepared = PreparedImage(
        filename=source.filename,
        data=encoded,
        mime=OUTPUT_MIME,
        extension=OUTPUT_EXTENSION,
        source_size=source_size,
        digest=hashlib.sha256(encoded).hexdigest(),
        warnings=tuple(warnings),
    )
    return Outcome(prepared, fingerprint(out))
