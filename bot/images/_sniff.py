"""Cheap identification of a file from its declared type or its first bytes.

Only bytes recognised here as one of the supported raster formats are ever given to Pillow, and
then only to that format's plugin: the many other plugins Pillow ships (EPS, which runs
Ghostscript, FITS, ...) never see untrusted data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._types import ImageProblem

# Supported formats: Pillow format name -> (label shown to users, canonical mime).
FORMATS: Final[dict[str, tuple[str, str]]] = {
    "JPEG": ("JPEG", "image/jpeg"),
    "PNG": ("PNG", "image/png"),
    "GIF": ("GIF", "image/gif"),
    "WEBP": ("WebP", "image/webp"),
    "BMP": ("BMP", "image/bmp"),
    "TIFF": ("TIFF", "image/tiff"),
    "HEIF": ("HEIC", "image/heic"),
    "AVIF": ("AVIF", "image/avif"),
}
SUPPORTED_LIST: Final = "JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or TIFF"
_EXPORT_HINT: Final = "export it as JPEG or PNG and upload that instead"

# Declared types that name a supported format under another spelling.
_MIME_ALIASES: Final[dict[str, str]] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/jpe": "image/jpeg",
    "image/x-png": "image/png",
    "image/apng": "image/png",
    "image/vnd.mozilla.apng": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/tif": "image/tiff",
    "image/heif": "image/heic",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heic",
    "image/avif-sequence": "image/avif",
}
# Declared types that say nothing about the contents: decide on the bytes.
_UNINFORMATIVE: Final = frozenset(
    {
        "",
        "application/octet-stream",
        "application/x-octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/unknown",
        "application/force-download",
        "application/x-download",
    }
)
_NON_IMAGE_TOP: Final[dict[str, str]] = {
    "text": "is text ({mime}), not an image",
    "video": "is a video ({mime}), not a photo",
    "audio": "is an audio file ({mime}), not a photo",
    "font": "is a font ({mime}), not an image",
    "model": "is a 3D model ({mime}), not a photo",
    "multipart": "is not an image (declared as {mime})",
    "message": "is not an image (declared as {mime})",
}
_SVG_DETAIL: Final = (
    "is an SVG vector drawing, which cannot be used for training; upload a photo (JPEG, PNG, WebP or HEIC) instead"
)
RAW_EXTENSIONS: Final = (
    *(".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf"),
    *(".rw2", ".raf", ".pef", ".srw", ".3fr", ".erf", ".kdc", ".mrw", ".x3f", ".iiq"),
)
RAW_DETAIL: Final = f"is a camera RAW file, which is not supported; {_EXPORT_HINT}"


@dataclass(frozen=True, slots=True)
class Refusal:
    problem: ImageProblem
    detail: str


def normalise_mime(declared: str | None) -> str:
    """Lower-cased type without parameters, aliases folded ("image/JPG; x=y" -> "image/jpeg")."""
    if not declared:
        return ""
    mime = declared.split(";", 1)[0].strip().lower()
    return _MIME_ALIASES.get(mime, mime)


def refuse_declared_type(declared: str | None) -> Refusal | None:
    """Refuse a declared type that is clearly not a raster image; anything doubtful passes."""
    mime = normalise_mime(declared)
    if mime in _UNINFORMATIVE:
        return None
    if mime.startswith("image/svg"):
        return Refusal(ImageProblem.UNSUPPORTED_FORMAT, _SVG_DETAIL)
    top = mime.partition("/")[0]
    if top == "image":
        return None
    shown = mime[:60]
    if mime == "application/pdf":
        return Refusal(ImageProblem.NOT_AN_IMAGE, "is a PDF document, not an image")
    if top in _NON_IMAGE_TOP:
        return Refusal(ImageProblem.NOT_AN_IMAGE, _NON_IMAGE_TOP[top].format(mime=shown))
    return Refusal(ImageProblem.NOT_AN_IMAGE, f"is not an image (declared as {shown})")


def declared_mismatch(declared: str | None, fmt: str) -> bool:
    """True when an informative declared type names a different format than the bytes hold."""
    mime = normalise_mime(declared)
    if mime in _UNINFORMATIVE:
        return False
    return mime != FORMATS[fmt][1]


_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_HEIF_GENERIC: Final = frozenset({b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})


def _sniff_ftyp(data: bytes) -> str | Refusal:
    """ISO base media file (HEIC, AVIF, but also MP4/MOV videos and CR3 raws)."""
    box_size = int.from_bytes(data[0:4], "big")
    end = min(len(data), box_size if 16 <= box_size <= 4096 else 64)
    major = data[8:12]
    brands = {major} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _HEIF_BRANDS:
        return "HEIF"
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & (_HEIF_BRANDS | _HEIF_GENERIC):
        return "HEIF"
    if major == b"crx ":
        return Refusal(ImageProblem.UNSUPPORTED_FORMAT, RAW_DETAIL)
    if major.startswith(b"M4A") or major.startswith(b"M4B"):
        return Refusal(ImageProblem.NOT_AN_IMAGE, "is an audio file, not a photo")
    return Refusal(ImageProblem.NOT_AN_IMAGE, "is a video, not a photo")


# (magic prefix, result) checked in order, after the formats that need more than a prefix.
_MAGIC: Final[tuple[tuple[bytes, str | Refusal], ...]] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF-", Refusal(ImageProblem.NOT_AN_IMAGE, "is a PDF document, not an image")),
    (b"PK\x03\x04", Refusal(ImageProblem.NOT_AN_IMAGE, "is a ZIP archive or Office document, not an image")),
    (b"\x1f\x8b", Refusal(ImageProblem.NOT_AN_IMAGE, "is a compressed (gzip) file, not an image")),
    (b"Rar!", Refusal(ImageProblem.NOT_AN_IMAGE, "is a RAR archive, not an image")),
    (b"7z\xbc\xaf\x27\x1c", Refusal(ImageProblem.NOT_AN_IMAGE, "is a 7-Zip archive, not an image")),
    (b"\x1a\x45\xdf\xa3", Refusal(ImageProblem.NOT_AN_IMAGE, "is a video (WebM/MKV), not a photo")),
    (b"ID3", Refusal(ImageProblem.NOT_AN_IMAGE, "is an audio file, not a photo")),
    (b"OggS", Refusal(ImageProblem.NOT_AN_IMAGE, "is an audio or video file (Ogg), not a photo")),
    (b"fLaC", Refusal(ImageProblem.NOT_AN_IMAGE, "is an audio file, not a photo")),
    (b"MZ", Refusal(ImageProblem.NOT_AN_IMAGE, "is a program, not an image")),
    (b"\x7fELF", Refusal(ImageProblem.NOT_AN_IMAGE, "is a program, not an image")),
    (b"8BPS", Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a Photoshop (PSD) file; {_EXPORT_HINT}")),
    (
        b"\x00\x00\x00\x0cjP  \r\n\x87\n",
        Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a JPEG 2000 image, which is not supported; {_EXPORT_HINT}"),
    ),
    (
        b"\xff\x4f\xff\x51",
        Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a JPEG 2000 image, which is not supported; {_EXPORT_HINT}"),
    ),
    (
        b"\x00\x00\x00\x0cJXL \r\n\x87\n",
        Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a JPEG XL image, which is not supported; {_EXPORT_HINT}"),
    ),
    (
        b"\xff\x0a",
        Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a JPEG XL image, which is not supported; {_EXPORT_HINT}"),
    ),
    (b"%!PS", Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a PostScript/EPS file; {_EXPORT_HINT}")),
    (b"\xc5\xd0\xd3\xc6", Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is a PostScript/EPS file; {_EXPORT_HINT}")),
    (b"FUJIFILMCCD-RAW", Refusal(ImageProblem.UNSUPPORTED_FORMAT, RAW_DETAIL)),
    (b"\x00\x00\x01\x00", Refusal(ImageProblem.UNSUPPORTED_FORMAT, f"is an icon (ICO) file; {_EXPORT_HINT}")),
)


def _text_refusal(data: bytes) -> Refusal | None:
    """Recognise text (and name SVG and HTML specifically); None if the bytes are not text."""
    sample = data[:4096]
    text: str | None = None
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = sample[: len(sample) // 2 * 2].decode("utf-16")
        except UnicodeDecodeError:
            return None
    elif b"\x00" not in sample:
        try:
            text = sample.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut by the 4 KiB window is still text.
            if exc.start < len(sample) - 3 or len(data) <= len(sample):
                return None
            text = sample[: exc.start].decode("utf-8-sig", errors="replace")
    if not text:
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\r\n\t\f")
    if printable < 0.95 * len(text):
        return None
    lowered = text.lower()
    if "<svg" in lowered:
        return Refusal(ImageProblem.UNSUPPORTED_FORMAT, _SVG_DETAIL)
    if "<html" in lowered or "<!doctype html" in lowered:
        return Refusal(ImageProblem.NOT_AN_IMAGE, "is a web page (HTML), not an image")
    return Refusal(ImageProblem.NOT_AN_IMAGE, "is not an image (its contents are text)")


def sniff(data: bytes, filename: str) -> str | Refusal:
    """The Pillow format name of a supported raster image, or why the bytes are refused."""
    if data[4:8] == b"ftyp":
        return _sniff_ftyp(data)
    if data[:4] == b"RIFF":
        kind = data[8:12]
        if kind == b"WEBP":
            return "WEBP"
        if kind == b"AVI ":
            return Refusal(ImageProblem.NOT_AN_IMAGE, "is a video (AVI), not a photo")
        if kind == b"WAVE":
            return Refusal(ImageProblem.NOT_AN_IMAGE, "is an audio file, not a photo")
        return Refusal(ImageProblem.NOT_AN_IMAGE, "is not an image (an unknown RIFF file)")
    for magic, result in _MAGIC:
        if data.startswith(magic):
            return result
    text = _text_refusal(data)
    if text is not None:
        return text
    # "BM" is a weak signature (text can start with it), so it is tested after text.
    if data.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    if filename.lower().endswith(RAW_EXTENSIONS):
        return Refusal(ImageProblem.UNSUPPORTED_FORMAT, RAW_DETAIL)
    return Refusal(
        ImageProblem.NOT_AN_IMAGE,
        f"is not an image in a format the bot can read ({SUPPORTED_LIST})",
    )
