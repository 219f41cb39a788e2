"""Each server's own settings: what a server's managers changed with /lora-admin, over the
environment's defaults, and the one place that says which settings are in effect for a server.

Only the values a server overrides are stored; everything else follows the environment, so a
changed default reaches every server that kept it. `ServerSettings.effective` is what every rule
reads (limits, role lists, the card channel, the safety switch); it is cached per server and
replaced on every change this process makes. With several processes each server's interactions
reach the one process that runs its shard, so the cache is refreshed after `cache_seconds` only
for the rare read from elsewhere (a Generate button in DMs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, Literal

from bot.config import Settings
from bot.errors import UserError
from bot.jobs.model import GuildSettingChange
from bot.jobs.ports import GuildSettingsStore

log = logging.getLogger(__name__)

Source = Literal["server", "default"]
Kind = Literal["channel", "limit", "seconds", "roles", "switch"]

#: How long a server's settings are kept after the bot leaves it (it may be invited back).
RETENTION = timedelta(days=30)
#: How often the leader deletes the settings of servers left longer ago than RETENTION.
PURGE_INTERVAL_SECONDS = 3600.0
#: The most roles one list holds (Discord's select menus show 25 at most).
MAX_ROLES = 25


@dataclass(frozen=True, slots=True)
class Spec:
    """One per-server setting: its stored key, how it is shown, and where its default comes from."""

    key: str
    label: str
    kind: Kind
    #: The `Settings` attribute holding the environment's default (None: no environment variable).
    default_from: str | None = None
    maximum: int = 0


SPECS: tuple[Spec, ...] = (
    Spec("card_channel_id", "Card channel", "channel"),
    Spec("max_active_jobs_per_user", "Running trainings per member", "limit", "max_active_jobs_per_user", 50),
    Spec(
        "max_trainings_per_user_per_day",
        "Trainings per member per day",
        "limit",
        "max_trainings_per_user_per_day",
        1000,
    ),
    Spec(
        "max_trainings_per_guild_per_day",
        "Trainings per server per day",
        "limit",
        "max_trainings_per_guild_per_day",
        10000,
    ),
    Spec(
        "max_pictures_per_user_per_day", "Pictures per member per day", "limit", "max_pictures_per_user_per_day", 10000
    ),
    Spec("imagine_cooldown_seconds", "/imagine cooldown", "seconds", "imagine_cooldown_seconds", 86400),
    Spec("train_role_ids", "Roles that may train", "roles", "train_role_ids"),
    Spec("generate_role_ids", "Roles that may make pictures", "roles", "generate_role_ids"),
    Spec("limits_exempt_managers", "Managers exempt from roles and limits", "switch", "limits_exempt_managers"),
    Spec(
        "safety_checker_off_in_nsfw_channels",
        "/imagine safety checker off in age-restricted channels",
        "switch",
        "imagine_safety_checker_off_in_nsfw_channels",
    ),
)
SPECS_BY_KEY: dict[str, Spec] = {spec.key: spec for spec in SPECS}


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """The settings in effect for one server (or, with `guild_id` None, for DMs: the defaults)."""

    guild_id: int | None
    card_channel_id: int | None
    max_active_jobs_per_user: int
    max_trainings_per_user_per_day: int
    max_trainings_per_guild_per_day: int
    max_pictures_per_user_per_day: int
    imagine_cooldown_seconds: int
    train_role_ids: tuple[int, ...]
    generate_role_ids: tuple[int, ...]
    limits_exempt_managers: bool
    safety_checker_off_in_nsfw_channels: bool
    #: Where each value comes from, by setting key: this server's override or the default.
    sources: Mapping[str, Source] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        return getattr(self, key)

    def source(self, key: str) -> Source:
        return self.sources.get(key, "default")


@dataclass(frozen=True, slots=True)
class SettingUpdate:
    """One setting as a change left it: from what to what, and where each value came from."""

    spec: Spec
    before: Any
    before_source: Source
    after: Any
    after_source: Source

    @property
    def changed(self) -> bool:
        return (self.before, self.before_source) != (self.after, self.after_source)


def defaults_of(settings: Settings) -> dict[str, Any]:
    """The environment's value of every per-server setting."""
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw: Any = getattr(settings, spec.default_from) if spec.default_from else None
        values[spec.key] = tuple(raw) if spec.kind == "roles" else raw
    return values


def normalise(spec: Spec, value: Any) -> Any:
    """`value` as the setting holds it; UserError (naming the setting) when it cannot be one."""
    if value is None:
        return None
    if spec.kind == "switch":
        if isinstance(value, bool):
            return value
    elif spec.kind == "roles":
        if isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            roles = tuple(dict.fromkeys(value))  # in order, once each
            if len(roles) > MAX_ROLES:
                raise UserError(f"{spec.label}: at most {MAX_ROLES} roles.")
            return roles
    elif isinstance(value, int) and not isinstance(value, bool):
        if spec.kind == "channel":
            return value
        if 0 <= value <= spec.maximum:
            return value
        raise UserError(f"{spec.label} must be between 0 (no limit) and {spec.maximum}.")
    raise UserError(f"{spec.label} can't be set to {value!r}.")


def resolve(guild_id: int | None, defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> ServerPolicy:
    """The policy of a server from the defaults and its stored overrides. A stored value this
    version cannot read (a hand edit, a newer release) falls back to the default, with a warning."""
    values = dict(defaults)
    sources: dict[str, Source] = {}
    for key, raw in overrides.items():
        spec = SPECS_BY_KEY.get(key)
        if spec is None:
            continue
        try:
            value = normalise(spec, raw)
        except UserError:
            log.warning("guild %s: ignoring the unreadable stored value of %s", guild_id, key)
            continue
        if value is not None:
            values[key] = value
            sources[key] = "server"
    return ServerPolicy(guild_id=guild_id, sources=sources, **values)


class ServerSettings:
    """Reads (cached) and changes each server's settings; forgets a server's when asked or long gone."""

    def __init__(
        self,
        store: GuildSettingsStore | None,
        settings: Settings,
        *,
        cache_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: None: no server has settings of its own, and every one follows the environment (tools, tests).
        self._store = store
        self.defaults = defaults_of(settings)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[int, tuple[float, ServerPolicy]] = {}
        self._dms = resolve(None, self.defaults, {})

    @classmethod
    def environment_only(cls, settings: Settings) -> ServerSettings:
        """Every server follows the environment's values (no store: nothing can be changed)."""
        return cls(None, settings)

    @property
    def store(self) -> GuildSettingsStore:
        if self._store is None:
            raise UserError("This bot runs without per-server settings.")
        return self._store

    # -- reading --------------------------------------------------------------------------------------

    async def effective(self, guild_id: int | None) -> ServerPolicy:
        """The settings in effect in `guild_id` (None: a DM, where the defaults apply)."""
        if guild_id is None or self._store is None:
            return self._dms if guild_id is None else resolve(guild_id, self.defaults, {})
        cached = self._cache.get(guild_id)
        if cached is not None and (self._cache_seconds is None or self._clock() - cached[0] < self._cache_seconds):
            return cached[1]
        policy = resolve(guild_id, self.defaults, await self.store.guild_overrides(guild_id))
        self._cache[guild_id] = (self._clock(), policy)
        return policy

    async def history(self, guild_id: int, *, limit: int = 5) -> list[GuildSettingChange]:
        """The server's latest changes, newest first."""
        return await self.store.guild_setting_changes(guild_id, limit=limit)

    # -- changing -------------------------------------------------------------------------------------

    async def change(self, guild_id: int, changed_by: int, changes: Mapping[str, Any]) -> list[SettingUpdate]:
        """Set (or, with None, reset to the default) each setting in `changes` for this server only.

        Returns each named setting from what to what (an unchanged one too, so the answer can say
        so); every real change is logged with who made it.
        """
        if not changes:
            raise UserError("Nothing to change: give at least one option.")
        stored: dict[str, Any] = {}
        for key, value in changes.items():
            spec = SPECS_BY_KEY.get(key)
            if spec is None:
                raise UserError(f"There is no setting called {key!r}.")
            normalised = normalise(spec, value)
            stored[key] = list(normalised) if isinstance(normalised, tuple) else normalised
        before, after = await self.store.update_guild_overrides(guild_id, stored, changed_by=changed_by)
        old = resolve(guild_id, self.defaults, before)
        new = resolve(guild_id, self.defaults, after)
        self._cache[guild_id] = (self._clock(), new)
        updates = [
            SettingUpdate(SPECS_BY_KEY[key], old.value(key), old.source(key), new.value(key), new.source(key))
            for key in changes
        ]
        for update in updates:
            if update.changed:
                log.info(
                    "guild %s: member %s changed %s from %r (%s) to %r (%s)",
                    guild_id,
                    changed_by,
                    update.spec.key,
                    update.before,
                    update.before_source,
                    update.after,
                    update.after_source,
                )
        return updates

    async def forget(self, guild_id: int, requested_by: int) -> bool:
        """Delete everything stored about the server's settings (`/lora-admin forget-server`)."""
        deleted = await self.store.forget_guild(guild_id)
        self._cache.pop(guild_id, None)
        log.info("guild %s: member %s deleted the server's settings (%s)", guild_id, requested_by, deleted)
        return deleted

    # -- servers the bot leaves -----------------------------------------------------------------------

    async def left(self, guild_id: int) -> None:
        """The bot was removed from the server: its settings are kept for RETENTION, then deleted."""
        if await self.store.mark_guilds_left([guild_id], self.store.now()):
            log.info("guild %s: the bot left; its settings are deleted after %d days", guild_id, RETENTION.days)
        self._cache.pop(guild_id, None)

    async def returned(self, guild_id: int) -> None:
        """The bot joined (or was invited back to) the server: settings kept since it left stay."""
        if await self.store.mark_guilds_present([guild_id]):
            log.info("guild %s: the bot is back; the server's settings are kept", guild_id)

    async def reconcile_presence(self, present: Collection[int], *, ours: Callable[[int], bool]) -> None:
        """After connecting: the servers the bot is in keep their settings, and those it was removed
        from while it was offline start their countdown. `ours(guild_id)` says whether this process
        would see that server (it runs the server's shard)."""
        present_ids = set(present)
        if present_ids:
            await self.store.mark_guilds_present(sorted(present_ids))
        gone = [g for g in await self.store.guilds_with_settings() if ours(g) and g not in present_ids]
        if gone and await self.store.mark_guilds_left(gone, self.store.now()):
            log.info(
                "the bot is no longer in %d server(s) with settings; they are deleted in %d days",
                len(gone),
                RETENTION.days,
            )
        for guild_id in gone:
            self._cache.pop(guild_id, None)

    async def purge_departed(self) -> list[int]:
        """Delete the settings of servers the bot left more than RETENTION ago."""
        purged = await self.store.purge_guilds_left_before(self.store.now() - RETENTION)
        for guild_id in purged:
            self._cache.pop(guild_id, None)
            log.info("guild %s: deleted its settings, %d days after the bot left", guild_id, RETENTION.days)
        return purged

    async def run_purge(self, interval: float = PURGE_INTERVAL_SECONDS) -> None:
        """The leader's loop deleting departed servers' settings; run under the supervisor."""
        while True:
            await self.purge_departed()
            await asyncio.sleep(interval)


#: The names of the policy's fields that are settings (all but guild_id and sources).
POLICY_KEYS = tuple(f.name for f in fields(ServerPolicy) if f.name not in ("guild_id", "sources"))
assert set(POLICY_KEYS) == set(SPECS_BY_KEY), "every per-server setting is a field of ServerPolicy"
