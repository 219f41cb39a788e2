"""Collecting the /train photos: cheap checks, bounded downloads, preparation off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol

from bot.images import (
    ImageLimits,
    ImageProblem,
    PreparedBatch,
    PreparedImage,
    RejectedImage,
    SourceImage,
    make_preview_grid,
    precheck,
    prepare_batch_async,
)

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = 30.0


class AttachmentLike(Protocol):
    """What we need of a discord.Attachment (kept narrow so tests can pass simple fakes)."""

    filename: str
    content_type: str | None
    size: int

    async def read(self) -> bytes: ...


async def _download(attachment: AttachmentLike, limits: ImageLimits) -> bytes | RejectedImage:
    try:
        data = await asyncio.wait_for(attachment.read(), DOWNLOAD_TIMEOUT)
    except Exception as error:  # discord.HTTPException, aiohttp errors, timeouts
        log.warning("could not download %s: %s", attachment.filename, type(error).__name__)
        return RejectedImage(attachment.filename, ImageProblem.UNDECODABLE, "could not be downloaded from Discord")
    if len(data) > limits.max_bytes:
        return RejectedImage(
            attachment.filename,
            ImageProblem.TOO_LARGE_BYTES,
            f"is larger than the {limits.max_bytes // (1024 * 1024)} MB limit",
        )
    return data


async def collect_photos(
    attachments: Sequence[AttachmentLike], limits: ImageLimits, executor: Executor | None = None
) -> PreparedBatch:
    """Check declared types and sizes, download what passes, and prepare the crops off the loop."""
    sources = [SourceImage(a.filename, a.content_type, a.size) for a in attachments]
    early: list[RejectedImage] = []
    wanted: list[tuple[SourceImage, AttachmentLike]] = []
    for source, attachment in zip(sources, attachments, strict=True):
        problem = precheck(source, limits)
        if problem is not None:
            early.append(problem)
        else:
            wanted.append((source, attachment))
    downloads = await asyncio.gather(*(_download(attachment, limits) for _, attachment in wanted))
    items: list[tuple[SourceImage, bytes]] = []
    for (source, _), data in zip(wanted, downloads, strict=True):
        if isinstance(data, RejectedImage):
            early.append(data)
        else:
            items.append((source, data))
    batch = await prepare_batch_async(items, limits, executor=executor)
    if not early:
        return batch
    return dataclasses.replace(batch, rejected=(*early, *batch.rejected))


async def preview_grid(images: Sequence[PreparedImage], executor: Executor | None = None) -> bytes:
    """The contact sheet of the crops for the preview, made off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(executor, make_preview_grid, images)
