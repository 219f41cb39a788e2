"""Checking and preparing members' photos for LoRA training.

Flow: ``precheck`` each attachment before downloading it, then ``prepare_batch_async`` the
downloaded bytes (Pillow never runs on the event loop), then post the crops and
``make_preview_grid``. Outputs are output_size x output_size RGB JPEGs (quality 95, 4:4:4) without
any metadata.
"""

from ._batch import (
    make_preview_grid,
    precheck,
    prepare_batch,
    prepare_batch_async,
    prepare_one,
)
from ._types import (
    ImageLimits,
    ImageProblem,
    PreparedBatch,
    PreparedImage,
    RejectedImage,
    SourceImage,
)
from ._upload import fit_for_upload

__all__ = [
    "ImageLimits",
    "ImageProblem",
    "PreparedBatch",
    "PreparedImage",
    "RejectedImage",
    "SourceImage",
    "fit_for_upload",
    "make_preview_grid",
    "precheck",
    "prepare_batch",
    "prepare_batch_async",
    "prepare_one",
]
