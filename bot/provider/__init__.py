"""Adapter for the Stable Diffusion API (ModelsLab) v3 LoRA training endpoints."""

from bot.provider.client import MAX_CROP_IMAGE_BYTES, ProviderClient, normalize_api_root
from bot.provider.errors import (
    InsufficientCredits,
    InvalidApiKey,
    ProviderError,
    ProviderMisconfigured,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    SubmissionUncertain,
    TrainingNotFound,
)
from bot.provider.models import (
    DEFAULT_NEGATIVE_PROMPT,
    KNOWN_TRAINING_STATUSES,
    UNKNOWN_STATUS,
    SubmitResult,
    TrainingRequest,
    TrainingStatus,
    TrainingType,
)

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "KNOWN_TRAINING_STATUSES",
    "MAX_CROP_IMAGE_BYTES",
    "UNKNOWN_STATUS",
    "InsufficientCredits",
    "InvalidApiKey",
    "ProviderClient",
    "ProviderError",
    "ProviderMisconfigured",
    "ProviderUnavailable",
    "RateLimited",
    "RequestRejected",
    "SubmissionUncertain",
    "SubmitResult",
    "TrainingNotFound",
    "TrainingRequest",
    "TrainingStatus",
    "TrainingType",
    "normalize_api_root",
]
