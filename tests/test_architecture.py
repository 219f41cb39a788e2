"""The layers hold: the domain (bot/jobs) imports no adapter, the cogs talk to services only, and
the stores know nothing of the provider or Discord.

Imports are read with `ast`, so an import inside a function or under TYPE_CHECKING counts as
much as one at the top. The domain is also followed through the other `bot` modules it imports
(configuration, images, errors), so an adapter can't come in through a side door either.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What no domain module may import, directly (the adapters, Discord, the database and HTTP libraries).
DOMAIN_FORBIDDEN = (
    "bot.store",
    "bot.provider",
    "bot.delivery",
    "bot.messenger",
    "bot.webhooks",
    "bot.app",
    "bot.discord_bot",
    "bot.render",
    "bot.metrics",
    "cogs",
    "discord",
    "sqlite3",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "aiohttp",
    "prometheus_client",
)
#: Libraries the domain may not reach even through another `bot` module.
DOMAIN_FORBIDDEN_LIBRARIES = ("discord", "sqlite3", "aiosqlite", "asyncpg", "httpx", "aiohttp", "prometheus_client")
#: Cogs talk to services: no store, no provider client, no delivery adapter.
COG_FORBIDDEN = (
    "bot.store",
    "bot.provider",
    "bot.delivery",
    "bot.messenger",
    "bot.app",
    "sqlite3",
    "aiosqlite",
    "asyncpg",
    "httpx",
)
#: The stores implement the domain's protocols and know nothing of the provider or Discord.
STORE_FORBIDDEN = ("bot.provider", "bot.delivery", "bot.messenger", "bot.render", "bot.webhooks", "cogs", "discord")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` imports, anywhere in it; `from a import b` counts as `a` and `a.b`
    (b may be a module), and relative imports are resolved against `module`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports_of_file(path: Path) -> set[str]:
    return imports_of(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def matching(imported: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(name for name in imported if any(name == p or name.startswith(p + ".") for p in prefixes))


def files_under(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def source_file(module: str) -> Path | None:
    """The file of a `bot` module, or None for a name that is not one (e.g. a class imported from one)."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_libraries(path: Path) -> dict[str, str]:
    """Top-level libraries imported by `path` or by any `bot` module it reaches, each with the
    module that imports it."""
    libraries: dict[str, str] = {}
    seen: set[Path] = set()
    pending = [path]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of_file(current):
            top = name.split(".")[0]
            if top in ("bot", "cogs"):
                # Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first.
                parts = name.split(".")
                found = [source_file(".".join(parts[:end])) for end in range(1, len(parts) + 1)]
                pending.extend(path for path in found if path is not None)
            elif name:
                libraries.setdefault(top, module_name(current))
    return libraries


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


DOMAIN = files_under("bot/jobs")
COGS = files_under("cogs")
STORES = files_under("bot/store")


def test_each_layer_has_modules() -> None:
    assert DOMAIN and COGS and STORES, "the layers moved: update the paths in this test"


@pytest.mark.parametrize("path", DOMAIN, ids=ids(DOMAIN))
def test_the_domain_imports_no_adapter(path: Path) -> None:
    assert matching(imports_of_file(path), DOMAIN_FORBIDDEN) == []


@pytest.mark.parametrize("path", DOMAIN, ids=ids(DOMAIN))
def test_the_domain_reaches_no_adapter_library_through_other_modules(path: Path) -> None:
    reached = reachable_libraries(path)
    leaks = {library: via for library, via in reached.items() if library in DOMAIN_FORBIDDEN_LIBRARIES}
    assert leaks == {}


@pytest.mark.parametrize("path", COGS, ids=ids(COGS))
def test_cogs_talk_to_services_only(path: Path) -> None:
    assert matching(imports_of_file(path), COG_FORBIDDEN) == []


@pytest.mark.parametrize("path", STORES, ids=ids(STORES))
def test_stores_know_nothing_of_the_provider_or_discord(path: Path) -> None:
    assert matching(imports_of_file(path), STORE_FORBIDDEN) == []


def test_the_cogs_services_carry_no_store_provider_client_or_messenger() -> None:
    from bot.delivery.messenger import Messenger
    from bot.discord_bot import Services
    from bot.jobs.ports import GenerationStore, ImageProvider, JobStore, KeyValue, TrainingProvider

    adapters = (Messenger, JobStore, GenerationStore, KeyValue, TrainingProvider, ImageProvider)
    fields = typing.get_type_hints(Services)
    leaked = {
        name: hint
        for name, hint in fields.items()
        if hint in adapters or getattr(hint, "__module__", "").startswith(("bot.store", "bot.provider"))
    }
    assert fields and leaked == {}


def test_imports_are_found_wherever_they_are_written() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from bot import store\n"
        "from . import sibling\n"
        "from ..provider.client import ProviderClient\n"
        "if TYPE_CHECKING:\n"
        "    import discord\n"
        "def later():\n"
        "    import httpx\n"
    )
    found = imports_of(source, "bot.jobs.example")
    assert matching(found, DOMAIN_FORBIDDEN) == [
        "bot.provider.client",
        "bot.provider.client.ProviderClient",
        "bot.store",
        "discord",
        "httpx",
    ]
    assert "bot.jobs.sibling" in found
