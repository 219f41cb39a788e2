"""Image work of the simulator: fetching training images by URL, the `base64_crop` crop, and the
pictures the v6 `text2img` endpoint "generates"."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import random
from dataclasses import dataclass

import httpx
from PIL import Image, ImageOps

from bot.simulator.state import ImageInfo, tls_context


class ImageRejected(Exception):
    """An image the provider would refuse; the message is what the API answers."""


@dataclass(frozen=True)
class DecodedImage:
    format: str | None
    width: int
    height: int
    mode: str


def decode(data: bytes) -> DecodedImage:
    """Fully decode `data` with Pillow (blocking); raises on anything Pillow cannot read."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return DecodedImage(image.format, image.width, image.height, image.mode)


async def fetch_image(client: httpx.AsyncClient, index: int, url: str, *, max_bytes: int) -> ImageInfo:
    """Download one training image exactly at `url` and decode it.

    `index` is 1-based, as in the error message ("Image 3 could not be downloaded: ...").
    """
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ImageRejected(f"Image {index} could not be downloaded: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ImageRejected(f"Image {index} is too large (more than {max_bytes} bytes)")
                chunks.append(chunk)
            content_type = response.headers.get("content-type")
    except httpx.TimeoutException:
        raise ImageRejected(f"Image {index} could not be downloaded: timed out") from None
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        raise ImageRejected(f"Image {index} could not be downloaded: {reason}") from None
    data = b"".join(chunks)
    if not data:
        raise ImageRejected(f"Image {index} could not be decoded: the file is empty")
    try:
        decoded = await asyncio.to_thread(decode, data)
    except Exception as exc:
        raise ImageRejected(f"Image {index} could not be decoded: {type(exc).__name__}") from None
    return ImageInfo(
        index=index,
        url=url,
        byte_size=len(data),
        content_type=content_type,
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        mode=decoded.mode,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def image_client(per_image_timeout: float) -> httpx.AsyncClient:
    """The HTTP client the simulator downloads training images with (redirects followed)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(per_image_timeout),
        follow_redirects=True,
        max_redirects=5,
        trust_env=False,
        verify=tls_context(),
        headers={"User-Agent": "lorabot-provider-simulator"},
    )


async def fetch_images(
    client: httpx.AsyncClient, urls: tuple[str, ...], *, max_bytes: int, concurrency: int = 8
) -> list[ImageInfo]:
    """Fetch every image (concurrently); raises `ImageRejected` for the first bad one by index."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, url: str) -> ImageInfo | ImageRejected:
        async with semaphore:
            try:
                return await fetch_image(client, index, url, max_bytes=max_bytes)
            except ImageRejected as exc:
                return exc

    results = await asyncio.gather(*(one(i, url) for i, url in enumerate(urls, start=1)))
    infos: list[ImageInfo] = []
    for result in results:
        if isinstance(result, ImageRejected):
            raise result
        infos.append(result)
    return infos


def parse_data_uri(value: str) -> bytes:
    """Decode `data:image/...;base64,...` (or bare base64); raises `ImageRejected`."""
    payload = value
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ImageRejected("The image must be a base64 encoded data URI.")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("The image is not valid base64.") from None


@dataclass(frozen=True)
class CropResult:
    png: bytes
    width: int
    height: int
    source_format: str | None


def crop_to_png(data: bytes, *, crop: bool, size: int) -> CropResult:
    """Decode, fix orientation, centre-crop and scale to `size`x`size` if `crop`, encode PNG (blocking)."""
    with Image.open(io.BytesIO(data)) as opened:
        source_format = opened.format
        opened.load()
        image = ImageOps.exif_transpose(opened)
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        if crop:
            image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
        out = io.BytesIO()
        image.save(out, format="PNG")
        return CropResult(out.getvalue(), image.width, image.height, source_format)


def render_png(width: int, height: int, seed: int, index: int) -> bytes:
    """A `width`x`height` PNG standing in for a generated picture (blocking; a few ms).

    A two-colour vertical gradient under a coarse noise pattern, both drawn from `seed` and
    `index`, so every picture of a generation differs and the same seed gives the same pictures.
    """
    rng = random.Random(f"{seed}:{index}")
    size = (width, height)
    top = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    bottom = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    image = Image.composite(bottom, top, Image.linear_gradient("L").resize(size))
    cells = (max(1, width // 8), max(1, height // 8))
    noise = Image.frombytes("RGB", cells, rng.randbytes(cells[0] * cells[1] * 3))
    image = Image.blend(image, noise.resize(size, Image.Resampling.NEAREST), 0.3)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def render_pngs(width: int, height: int, seed: int, count: int) -> list[bytes]:
    """`count` pictures of one generation (blocking: run it in a thread)."""
    return [render_png(width, height, seed, index) for index in range(count)]
