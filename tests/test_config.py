"""Settings: defaults, every variable from the environment and from `.env`, errors naming every bad setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, Settings, load_settings, local_webhook_url

REPO = Path(__file__).resolve().parent.parent
TOKEN = "discord-token-SECRET-aaaaaaaaaaaaaaaa"
KEY = "sdapi-key-SECRET-bbbbbbbbbbbbbbbbbbbb"
METRICS_TOKEN = "metrics-token-SECRET-cccccccccccc"

#: Every setting, as an operator writes it, and the value the code must read from it (none a default).
ALL_VARIABLES: dict[str, tuple[str, Any]] = {
    "DISCORD_TOKEN": (TOKEN, TOKEN),
    "DISCORD_API_BASE": ("http://127.0.0.1:9000/api/v10/", "http://127.0.0.1:9000/api/v10"),
    "DISCORD_GATEWAY_URL": ("ws://127.0.0.1:9001/", "ws://127.0.0.1:9001/"),
    "DISCORD_GUILD_ID": ("123456789012345678", 123456789012345678),
    "SHARD_COUNT": ("4", 4),
    "SHARD_IDS": (" 3, 1", [1, 3]),
    "SDAPI_KEY": (KEY, KEY),
    "SDAPI_BASE_URL": ("http://127.0.0.1:7860", "http://127.0.0.1:7860"),
    "SDAPI_TIMEOUT_SECONDS": ("12.5", 12.5),
    "SDAPI_SUBMIT_TIMEOUT_SECONDS": ("45", 45.0),
    "SDAPI_TRAINING_TYPE_WOMAN": ("women", "women"),
    "SDAPI_QUEUE_RETRY_SECONDS": ("120", 120),
    "SDAPI_BASE_MODEL_SDXL": ("juggernaut-xl", "juggernaut-xl"),
    "SDAPI_BASE_MODEL_SD15": ("realistic-vision-v51", "realistic-vision-v51"),
    "IMAGINE_DEADLINE_SECONDS": ("300", 300),
    "MAX_CONCURRENT_GENERATIONS": ("2", 2),
    "IMAGINE_COOLDOWN_SECONDS": ("0", 0),
    "MAX_PICTURES_PER_USER_PER_DAY": ("12", 12),
    "IMAGINE_SAFETY_CHECKER_OFF_IN_NSFW_CHANNELS": ("true", True),
    "READY_SAMPLES": ("2", 2),
    "READY_SAMPLES_DEADLINE_SECONDS": ("60", 60),
    "PUBLIC_URL": ("https://hooks.example.org/bot/", "https://hooks.example.org/bot"),
    "WEBHOOK_HOST": ("0.0.0.0", "0.0.0.0"),
    "WEBHOOK_PORT": ("9443", 9443),
    "WEBHOOK_MAX_BODY_BYTES": ("4096", 4096),
    "WEBHOOK_RATE_LIMIT_PER_MINUTE": ("42", 42),
    "METRICS_ENABLED": ("false", False),
    "METRICS_TOKEN": (METRICS_TOKEN, METRICS_TOKEN),
    "DATABASE_URL": ("sqlite:///data/other.db", "sqlite:///data/other.db"),
    "LEADER_INTERVAL_SECONDS": ("2.5", 2.5),
    "LOG_LEVEL": ("DEBUG", "DEBUG"),
    "LOG_FORMAT": ("json", "json"),
    "MIN_IMAGES": ("3", 3),
    "MAX_IMAGES": ("8", 8),
    "MAX_IMAGE_BYTES": ("2097152", 2097152),
    "MAX_IMAGE_PIXELS": ("1000000", 1000000),
    "MIN_IMAGE_SIDE": ("256", 256),
    "PREVIEW_TIMEOUT_SECONDS": ("300", 300),
    "MAX_ACTIVE_JOBS_PER_USER": ("2", 2),
    "MAX_TRAININGS_PER_USER_PER_DAY": ("0", 0),
    "MAX_TRAININGS_PER_GUILD_PER_DAY": ("7", 7),
    "LIMITS_EXEMPT_MANAGERS": ("true", True),
    "TRAIN_ROLE_IDS": ("111, 222,333", [111, 222, 333]),
    "GENERATE_ROLE_IDS": ("444;555", [444, 555]),
    "RECONCILE_INTERVAL_SECONDS": ("60", 60),
    "POLL_INTERVAL_SECONDS": ("30", 30),
    "STALL_DEADLINE_SECONDS": ("7200", 7200),
    "CARD_EDIT_INTERVAL_SECONDS": ("1.5", 1.5),
}

DEFAULTS: dict[str, Any] = {
    "discord_api_base": "https://discord.com/api/v10",
    "discord_gateway_url": "wss://gateway.discord.gg/",
    "discord_guild_id": None,
    "shard_count": None,
    "shard_ids": None,
    "sdapi_base_url": "https://modelslab.com",
    "sdapi_timeout_seconds": 30.0,
    "sdapi_submit_timeout_seconds": 90.0,
    "sdapi_training_type_woman": None,
    "sdapi_queue_retry_seconds": 600,
    "sdapi_base_model_sdxl": "tamarin-xl-v1",
    "sdapi_base_model_sd15": "f222-diffusion",
    "imagine_deadline_seconds": 600,
    "max_concurrent_generations": 3,
    "imagine_cooldown_seconds": 30,
    "max_pictures_per_user_per_day": 40,
    "imagine_safety_checker_off_in_nsfw_channels": False,
    "ready_samples": 0,
    "ready_samples_deadline_seconds": 300,
    "public_url": None,
    "webhook_host": "127.0.0.1",
    "webhook_port": 8080,
    "webhook_max_body_bytes": 65536,
    "webhook_rate_limit_per_minute": 600,
    "metrics_enabled": True,
    "metrics_token": None,
    "database_url": "sqlite:///lorabot.db",
    "leader_interval_seconds": 10.0,
    "log_level": "INFO",
    "log_format": "text",
    "min_images": 5,
    "max_images": 10,
    "max_image_bytes": 10 * 1024 * 1024,
    "max_image_pixels": 40_000_000,
    "min_image_side": 512,
    "preview_timeout_seconds": 600,
    "max_active_jobs_per_user": 1,
    "max_trainings_per_user_per_day": 3,
    "max_trainings_per_guild_per_day": 20,
    "limits_exempt_managers": False,
    "train_role_ids": [],
    "generate_role_ids": [],
    "reconcile_interval_seconds": 300,
    "poll_interval_seconds": 60,
    "stall_deadline_seconds": 10800,
    "card_edit_interval_seconds": 3.0,
}


def plain(settings: Settings, name: str) -> Any:
    value = getattr(settings, name)
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def assert_all_variables_read(settings: Settings) -> None:
    for variable, (_raw, expected) in ALL_VARIABLES.items():
        assert plain(settings, variable.lower()) == expected, variable


def required_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("SDAPI_KEY", KEY)


def test_the_tables_cover_every_setting() -> None:
    fields = set(Settings.model_fields)
    assert {name.lower() for name in ALL_VARIABLES} == fields
    assert set(DEFAULTS) == fields - {"discord_token", "sdapi_key"}


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    required_only(clean_env)
    settings = load_settings(env_file=None)
    for name, expected in DEFAULTS.items():
        assert getattr(settings, name) == expected, name
    assert settings.database_path == "lorabot.db"
    # No PUBLIC_URL: polling mode, and the submission's webhook is null.
    assert (settings.mode, settings.webhook_base, settings.simulated) == ("polling", None, False)


def test_every_variable_is_read_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    for variable, (raw, _expected) in ALL_VARIABLES.items():
        clean_env.setenv(variable, raw)
    settings = load_settings(env_file=None)
    assert_all_variables_read(settings)
    assert settings.database_path == "data/other.db"
    assert settings.webhook_base == "https://hooks.example.org/bot/webhooks/training"
    assert settings.mode == "webhooks"


def test_every_variable_is_read_from_a_dotenv_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n" + "".join(f"{variable}={raw}\n" for variable, (raw, _) in ALL_VARIABLES.items()),
        encoding="utf-8",
    )
    assert_all_variables_read(load_settings(env_file=env_file))


def test_the_environment_wins_over_the_dotenv_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"DISCORD_TOKEN={TOKEN}\nSDAPI_KEY={KEY}\nPUBLIC_URL=https://a.example\nWEBHOOK_PORT=1111\n")
    clean_env.setenv("WEBHOOK_PORT", "2222")
    settings = load_settings(env_file=env_file)
    assert settings.webhook_port == 2222
    assert settings.public_url == "https://a.example"


def test_the_documented_env_example_gives_the_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`.env.example` says its values are the defaults; with the two required ones filled it must load
    (PUBLIC_URL is left empty there: polling mode)."""
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    assert "\nPUBLIC_URL=\n" in text
    for name, value in (("DISCORD_TOKEN", TOKEN), ("SDAPI_KEY", KEY)):
        assert f"\n{name}=\n" in text
        text = text.replace(f"\n{name}=\n", f"\n{name}={value}\n")
    documented = {line.split("=", 1)[0].lower() for line in text.splitlines() if line and not line.startswith("#")}
    assert documented == set(Settings.model_fields)
    env_file = tmp_path / ".env"
    env_file.write_text(text, encoding="utf-8")
    settings = load_settings(env_file=env_file)
    for name, expected in DEFAULTS.items():
        assert getattr(settings, name) == expected, name


def test_a_broken_configuration_names_every_bad_setting_at_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SDAPI_BASE_URL", "ftp://nope.example")
    clean_env.setenv("WEBHOOK_PORT", "not-a-port")
    clean_env.setenv("MIN_IMAGES", "9")
    clean_env.setenv("MAX_IMAGES", "6")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    message = str(caught.value)
    for name in ("DISCORD_TOKEN", "SDAPI_KEY", "SDAPI_BASE_URL", "WEBHOOK_PORT", "MAX_IMAGES"):
        assert f"- {name}:" in message, name
    assert "PUBLIC_URL" not in message  # optional: unset means polling mode
    assert "MIN_IMAGES must not be greater than MAX_IMAGES" in message
    assert message.count("\n  - ") == 5


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PUBLIC_URL", "bot.example.org"),
        ("PUBLIC_URL", "ftp://bot.example.org"),
        ("PUBLIC_URL", "http://bot.example.org"),
        ("PUBLIC_URL", "http://192.168.1.10:8080"),
        ("DISCORD_API_BASE", "discord.com/api"),
        ("DISCORD_GATEWAY_URL", "https://gateway.discord.gg"),
        ("WEBHOOK_PORT", "70000"),
        ("WEBHOOK_PORT", "80.5"),
        ("DATABASE_URL", "mysql://db/bot"),
        ("DATABASE_URL", "postgresql://"),
        ("DATABASE_URL", "sqlite:///"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_ENABLED", "maybe"),
        ("METRICS_TOKEN", "too-short"),
        ("DISCORD_GUILD_ID", "my-guild"),
        ("TRAIN_ROLE_IDS", "123,admins"),
        ("GENERATE_ROLE_IDS", "artists"),
        ("MAX_ACTIVE_JOBS_PER_USER", "-1"),
        ("MIN_IMAGES", "0"),
        ("PREVIEW_TIMEOUT_SECONDS", "900"),
        ("POLL_INTERVAL_SECONDS", "4"),
        ("POLL_INTERVAL_SECONDS", "0"),
        ("SDAPI_TRAINING_TYPE_WOMAN", "woman"),
        ("DISCORD_TOKEN", "   "),
    ],
)
def test_each_bad_value_is_reported_by_name(clean_env: pytest.MonkeyPatch, variable: str, raw: str) -> None:
    required_only(clean_env)
    clean_env.setenv(variable, raw)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    lines = str(caught.value).splitlines()[1:]
    assert lines
    assert all(line.startswith(f"  - {variable}") for line in lines), lines


@pytest.mark.parametrize(
    "url", ["postgresql://lorabot:pw@db.internal:5432/lorabot", "postgres://db/bot", "postgresql:///bot?host=/run/pg"]
)
def test_a_postgresql_database_url_is_accepted(make_settings, url: str) -> None:
    assert make_settings(database_url=url).database_url == url


def test_a_bad_database_url_is_reported_without_its_password(clean_env: pytest.MonkeyPatch) -> None:
    required_only(clean_env)
    clean_env.setenv("DATABASE_URL", "mysql://lorabot:hunter2-secret@db/bot")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert "DATABASE_URL" in str(caught.value) and "hunter2" not in str(caught.value)


def test_min_images_equal_to_max_images_is_fine(make_settings) -> None:
    settings = make_settings(min_images=7, max_images=7)
    assert (settings.min_images, settings.max_images) == (7, 7)


def test_secrets_never_appear_in_repr_str_dumps_or_errors(clean_env: pytest.MonkeyPatch) -> None:
    required_only(clean_env)
    clean_env.setenv("METRICS_TOKEN", METRICS_TOKEN)
    settings = load_settings(env_file=None)
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())):
        assert TOKEN not in text
        assert KEY not in text
        assert METRICS_TOKEN not in text
    assert settings.discord_token.get_secret_value() == TOKEN

    clean_env.setenv("PUBLIC_URL", "nope")
    clean_env.setenv("WEBHOOK_PORT", TOKEN)  # a secret pasted into the wrong variable
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    for text in (str(caught.value), repr(caught.value)):
        assert TOKEN not in text
        assert KEY not in text
    assert caught.value.__cause__ is None  # the pydantic error (with its inputs) is not chained


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", [1]),
        ("1,2,3", [1, 2, 3]),
        (" 10 , 20 ,, 30 ", [10, 20, 30]),
        ("10;20", [10, 20]),
        ("123456789012345678,", [123456789012345678]),
        (" ", []),
        ("", []),
    ],
)
def test_train_role_ids_are_comma_separated(clean_env: pytest.MonkeyPatch, raw: str, expected: list[int]) -> None:
    required_only(clean_env)
    clean_env.setenv("TRAIN_ROLE_IDS", raw)
    assert load_settings(env_file=None).train_role_ids == expected


def test_train_role_ids_from_a_dotenv_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"DISCORD_TOKEN={TOKEN}\nSDAPI_KEY={KEY}\nPUBLIC_URL=https://x.example\nTRAIN_ROLE_IDS=5,6\n")
    assert load_settings(env_file=env_file).train_role_ids == [5, 6]


def test_keyword_overrides_win_and_the_settings_fixture_is_isolated(make_settings, tmp_path: Path) -> None:
    settings = make_settings(webhook_port=0, train_role_ids=[9])
    assert settings.webhook_port == 0
    assert settings.train_role_ids == [9]
    assert settings.database_path == str(tmp_path / "bot.db")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:8080/x", "http://[::1]:9000", "http://127.0.0.53"]
)
def test_plain_http_public_url_is_accepted_only_on_loopback(make_settings, url: str) -> None:
    assert make_settings(public_url=url).public_url == url.rstrip("/")


def test_public_url_without_https_names_the_setting_and_why(make_settings) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(public_url="http://bot.example.org")
    assert "PUBLIC_URL" in str(info.value) and "https" in str(info.value)


# -- polling mode and --simulate ----------------------------------------------------------------------


def test_without_public_url_the_bot_polls(clean_env: pytest.MonkeyPatch) -> None:
    required_only(clean_env)
    clean_env.setenv("PUBLIC_URL", "")  # an empty line in .env counts as unset
    clean_env.setenv("POLL_INTERVAL_SECONDS", "5")  # the smallest interval accepted
    settings = load_settings(env_file=None)
    assert (settings.public_url, settings.webhook_base, settings.mode) == (None, None, "polling")
    assert settings.poll_interval_seconds == 5


def test_a_poll_interval_under_five_seconds_is_refused_by_name(clean_env: pytest.MonkeyPatch) -> None:
    required_only(clean_env)
    clean_env.setenv("POLL_INTERVAL_SECONDS", "4")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert str(caught.value).splitlines()[1:] == [
        "  - POLL_INTERVAL_SECONDS: Input should be greater than or equal to 5"
    ]


def test_simulated_comes_only_from_for_simulator_never_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    required_only(clean_env)
    clean_env.setenv("SIMULATED", "true")
    clean_env.setenv("WEBHOOK_PORT", "9123")
    settings = load_settings(env_file=None)
    assert settings.simulated is False and "simulated" not in Settings.model_fields

    simulated = settings.for_simulator("http://127.0.0.1:40000/")
    assert simulated.simulated is True
    assert simulated.sdapi_base_url == "http://127.0.0.1:40000"
    # No PUBLIC_URL: webhooks come back to the local webhook server.
    assert simulated.public_url == "http://127.0.0.1:9123"
    assert simulated.mode == "webhooks"
    assert settings.simulated is False and settings.public_url is None  # the original is untouched

    clean_env.setenv("PUBLIC_URL", "https://bot.example.org")
    assert load_settings(env_file=None).for_simulator("http://127.0.0.1:1").public_url == "https://bot.example.org"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),
        ("localhost", 8080, "http://127.0.0.1:8080"),
        ("::", 8080, "http://[::1]:8080"),
        ("::1", 8080, "http://[::1]:8080"),
        ("127.0.0.2", 8080, "http://127.0.0.2:8080"),
        ("192.168.1.10", 8080, None),  # not reachable as a loopback address: the bot polls
        ("127.0.0.1", 0, None),  # an ephemeral port: nothing to give the provider before it is bound
    ],
)
def test_the_local_webhook_address_of_simulate(host: str, port: int, expected: str | None) -> None:
    assert local_webhook_url(host, port) == expected


@pytest.mark.parametrize(
    ("count", "ids", "expected"),
    [
        (None, None, (None, None)),
        ("3", None, (3, None)),
        ("3", "auto", (3, None)),
        ("3", "AUTO", (3, None)),
        ("3", "2,0", (3, [0, 2])),
        ("1", "0", (1, [0])),
    ],
)
def test_shard_settings(
    clean_env: pytest.MonkeyPatch, count: str | None, ids: str | None, expected: tuple[Any, Any]
) -> None:
    required_only(clean_env)
    for name, value in (("SHARD_COUNT", count), ("SHARD_IDS", ids)):
        if value is not None:
            clean_env.setenv(name, value)
    settings = load_settings(env_file=None)
    assert (settings.shard_count, settings.shard_ids) == expected


@pytest.mark.parametrize(
    ("count", "ids", "complaint"),
    [
        (None, "0", "SHARD_IDS: Value error, needs SHARD_COUNT"),
        ("2", "0,2", "SHARD_IDS: Value error, shard 2 does not exist: with SHARD_COUNT=2 the shards are 0 to 1"),
        ("2", "1,1", "SHARD_IDS: Value error, names shard 1 more than once"),
        ("2", "0;1", "SHARD_IDS: Value error, must be shard numbers separated by commas (like 0,2), or auto"),
        ("2", "-1", "SHARD_IDS: Value error, must be shard numbers"),
        ("2", "0,", "SHARD_IDS: Value error, must be shard numbers"),
        ("0", None, "SHARD_COUNT: Input should be greater than or equal to 1"),
        ("two", "0", "SHARD_COUNT: Input should be a valid integer"),
    ],
)
def test_bad_shard_settings_are_named(
    clean_env: pytest.MonkeyPatch, count: str | None, ids: str | None, complaint: str
) -> None:
    required_only(clean_env)
    for name, value in (("SHARD_COUNT", count), ("SHARD_IDS", ids)):
        if value is not None:
            clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    message = str(caught.value)
    assert complaint in message
    assert message.count("\n  - ") == 1  # one bad setting, one line (a bad SHARD_COUNT is not blamed on SHARD_IDS)
