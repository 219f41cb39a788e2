"""Settings: read once from the environment and an optional `.env` file, validated at start-up.

Every problem is collected and reported in one message that names the environment variable,
so an operator fixes a broken deployment in one pass. Secrets are `SecretStr`: their repr and
str are redacted, and only the adapters that need them call `get_secret_value()`.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The numbered SQL migrations are package data of the top-level `migrations` package (the
#: `migrations/` directory of the source tree), so an installed copy carries them too.
MIGRATIONS_PACKAGE = "migrations"


def migrations_dir() -> Traversable:
    """The directory of the migration files, wherever lorabot is installed."""
    return importlib.resources.files(MIGRATIONS_PACKAGE)


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]


class ConfigError(Exception):
    """The configuration is unusable; the message names every bad setting."""


def _http_url(value: str, name: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"{name} must be an absolute {' or '.join(schemes)} URL, got {value!r}")
    return value.rstrip("/")


def is_loopback_host(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1: an address only this machine can reach."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_webhook_url(host: str, port: int) -> str | None:
    """The webhook server's address as this machine reaches it; None when there is none to give
    (an ephemeral port, or a host that is not this machine's loopback or wildcard address)."""
    if port == 0:
        return None
    if host in ("", "0.0.0.0", "localhost"):  # noqa: S104 (compared, not bound)
        address = "127.0.0.1"
    elif host == "::":
        address = "[::1]"
    elif is_loopback_host(host):
        address = f"[{host}]" if ":" in host else host
    else:
        return None
    return f"http://{address}:{port}"


class Settings(BaseSettings):
    """All settings of the bot. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    # Discord
    discord_token: SecretStr
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_guild_id: int | None = None
    #: The bot's total number of gateway shards, across every process. Unset: what Discord
    #: recommends (`GET /gateway/bot`), all in this process.
    shard_count: int | None = Field(default=None, ge=1)
    #: The shards this process runs (e.g. `0,2`); unset or `auto`: all of SHARD_COUNT. Processes
    #: sharing one database run disjoint sets.
    shard_ids: Annotated[list[int] | None, NoDecode] = None

    # Provider
    sdapi_key: SecretStr
    #: The provider's current documentation uses modelslab.com for every training endpoint; the
    #: old stablediffusionapi.com host serves the same paths (docs/provider.md).
    sdapi_base_url: str = "https://modelslab.com"
    sdapi_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    sdapi_submit_timeout_seconds: float = Field(default=90.0, gt=0, le=600)
    #: The provider's word for "woman": its LoRA page says `female`, the ModelsLab schema `women`.
    #: Unset: the bot learns which one the provider accepts (and remembers it); set: forced.
    sdapi_training_type_woman: Literal["female", "women"] | None = None
    #: How long a submission may wait, in all, for the provider's full queue to free up.
    sdapi_queue_retry_seconds: int = Field(default=600, ge=0, le=3600)

    # Pictures (/imagine): the base checkpoints a trained LoRA is used on, by the job's base model.
    #: Defaults are the pairings the provider's docs show (docs/provider.md); never a Flux base,
    #: which refuses LoRAs trained on SD models.
    sdapi_base_model_sdxl: str = "tamarin-xl-v1"
    sdapi_base_model_sd15: str = "f222-diffusion"
    #: A generation not finished this long after /imagine is given up, and the member told.
    imagine_deadline_seconds: int = Field(default=600, ge=30, le=3600)
    #: At most this many generations at the provider at once, across all members. The provider's
    #: queue (5 on the smallest plan) is shared with trainings, so at most 4: one stays free.
    max_concurrent_generations: int = Field(default=3, ge=1, le=4)
    #: Seconds a member waits between two /imagine; pictures per member per rolling 24 h (0: no limit).
    imagine_cooldown_seconds: int = Field(default=30, ge=0)
    max_pictures_per_user_per_day: int = Field(default=40, ge=0)
    #: true: /imagine turns the provider's safety checker off, but only in age-restricted channels.
    imagine_safety_checker_off_in_nsfw_channels: bool = False
    #: Pictures made with a model when it becomes ready, sent with the ready DM (they cost credits).
    ready_samples: int = Field(default=0, ge=0, le=4)
    #: The ready DM waits at most this long for those pictures; later ones follow as a reply.
    ready_samples_deadline_seconds: int = Field(default=300, ge=10, le=1800)

    # Webhook server
    #: Where the provider can reach the webhook server. Unset: polling mode (no webhooks; every
    #: active job is polled every POLL_INTERVAL_SECONDS).
    public_url: str | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8080, ge=0, le=65535)
    webhook_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    webhook_rate_limit_per_minute: int = Field(default=600, ge=1)
    #: `GET /metrics` (Prometheus text format) on the webhook server; with a token, only to
    #: `Authorization: Bearer <token>`.
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None

    # Storage and logs
    database_url: str = "sqlite:///lorabot.db"
    #: How often a process tries to take (or checks it still holds) the lead of the once-per-system
    #: work on PostgreSQL: a dead leader is replaced within about this long.
    leader_interval_seconds: float = Field(default=10.0, ge=0.5, le=300)
    log_level: LogLevel = "INFO"
    #: `json`: one JSON object per line (time, level, logger, message, exception).
    log_format: LogFormat = "text"

    # Images
    min_images: int = Field(default=5, ge=1, le=10)
    max_images: int = Field(default=10, ge=1, le=10)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024, le=100 * 1024 * 1024)
    max_image_pixels: int = Field(default=40_000_000, ge=512 * 512, le=200_000_000)
    min_image_side: int = Field(default=512, ge=64, le=4096)

    # Flow and limits
    preview_timeout_seconds: int = Field(default=600, ge=30, le=840)
    max_active_jobs_per_user: int = Field(default=1, ge=0, description="0 means unlimited")
    max_trainings_per_user_per_day: int = Field(default=3, ge=0, description="0 means unlimited")
    max_trainings_per_guild_per_day: int = Field(default=20, ge=0, description="0 means unlimited")
    limits_exempt_managers: bool = False
    train_role_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    #: The roles that may use /imagine and Generate (empty: everyone). Each server can set its own
    #: with /lora-admin roles, like every limit above.
    generate_role_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # Background work
    reconcile_interval_seconds: int = Field(default=300, ge=10)
    #: Polling mode (no PUBLIC_URL): each active job is polled once per this many seconds.
    poll_interval_seconds: int = Field(default=60, ge=5)
    stall_deadline_seconds: int = Field(default=3 * 3600, ge=60)
    card_edit_interval_seconds: float = Field(default=3.0, ge=0)

    #: Set by `for_simulator` only: a private attribute, so no environment variable can set it.
    _simulated: bool = PrivateAttr(default=False)

    @field_validator("train_role_ids", "generate_role_ids", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _split_shard_ids(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in ("", "auto"):
            return None
        parts = [part.strip() for part in text.split(",")]
        if not all(part.isdigit() for part in parts):
            raise ValueError(f"must be shard numbers separated by commas (like 0,2), or auto; got {value!r}")
        return [int(part) for part in parts]

    @field_validator("shard_ids")
    @classmethod
    def _check_shard_ids(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        # A field validator (declared after SHARD_COUNT), so it is reported with every other bad setting.
        if value is None or "shard_count" not in info.data:  # unset, or SHARD_COUNT itself is invalid
            return value
        count = info.data["shard_count"]
        if count is None:
            raise ValueError(
                "needs SHARD_COUNT, the total number of shards across every process (e.g. SHARD_COUNT=2 "
                "and SHARD_IDS=0 here, SHARD_IDS=1 in the other process)"
            )
        if not value:
            raise ValueError("must name at least one shard, or be auto")
        duplicates = sorted({shard for shard in value if value.count(shard) > 1})
        if duplicates:
            raise ValueError(f"names shard {', '.join(map(str, duplicates))} more than once")
        beyond = [shard for shard in value if not 0 <= shard < count]
        if beyond:
            raise ValueError(
                f"shard {', '.join(map(str, beyond))} does not exist: with SHARD_COUNT={count} the shards are "
                f"0 to {count - 1}"
            )
        return sorted(value)

    @field_validator("discord_api_base", "sdapi_base_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        return _http_url(value, "the value")

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = _http_url(value, "PUBLIC_URL")
        parts = urlsplit(url)
        if parts.scheme != "https" and not is_loopback_host(parts.hostname):
            # The provider's webhook docs require https; plain http only on this machine (tests).
            raise ValueError(
                f"PUBLIC_URL must be an https:// URL (the provider calls only https webhooks), got {url!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError("PUBLIC_URL must not have a query string or a fragment")
        return url

    @field_validator("discord_gateway_url")
    @classmethod
    def _check_gateway(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"must be a ws:// or wss:// URL, got {value!r}")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Long enough not to be guessed, and to be masked in logs (shorter strings are not).
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters (or unset: /metrics without a token)")
        return value

    @field_validator("discord_token", "sdapi_key")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str) -> str:
        # The message never repeats the value: a PostgreSQL URL may carry a password.
        scheme, _, rest = value.partition("://")
        if scheme in ("postgresql", "postgres") and rest:
            return value
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ValueError(
                "must look like sqlite:///path/to/file.db (or sqlite:///:memory:) or postgresql://user@host/database"
            )
        return value

    @field_validator("max_images")
    @classmethod
    def _check_ranges(cls, value: int, info: ValidationInfo) -> int:
        # A field validator (not a model validator, which only runs when every field is valid)
        # so this is reported together with any other bad setting.
        minimum = info.data.get("min_images")
        if isinstance(minimum, int) and minimum > value:
            raise ValueError("MIN_IMAGES must not be greater than MAX_IMAGES")
        return value

    @property
    def database_path(self) -> str:
        """The SQLite file path (or ``:memory:``) named by DATABASE_URL (for SQLite only)."""
        return self.database_url.removeprefix("sqlite:///")

    @property
    def webhook_base(self) -> str | None:
        """The externally reachable prefix of training webhooks; None in polling mode."""
        return f"{self.public_url}/webhooks/training" if self.public_url else None

    @property
    def mode(self) -> Literal["webhooks", "polling"]:
        """How the bot follows trainings: the provider's webhooks, or polling (no PUBLIC_URL)."""
        return "webhooks" if self.public_url else "polling"

    @property
    def simulated(self) -> bool:
        """True under `lorabot run --simulate` (never read from the environment): every card and
        DM then says the training is simulated."""
        return self._simulated

    def for_simulator(self, base_url: str) -> Settings:
        """These settings pointed at the built-in simulator at `base_url` (`lorabot run --simulate`).

        Without PUBLIC_URL, webhooks come back to the local webhook server when it listens on a
        known port of this machine; otherwise the bot polls.
        """
        updates: dict[str, Any] = {"sdapi_base_url": base_url.rstrip("/")}
        if self.public_url is None:
            updates["public_url"] = local_webhook_url(self.webhook_host, self.webhook_port)
        copy = self.model_copy(update=updates)
        copy._simulated = True
        return copy


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]).upper() or "SETTINGS"
        message = item["msg"]
        if item["type"] == "missing":
            message = "is required but not set"
        lines.append(f"  - {name}: {message}")
    return "\n".join(lines)


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read and validate the settings, raising ConfigError that lists every problem."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as error:
        raise ConfigError("Invalid configuration:\n" + _describe(error)) from None
