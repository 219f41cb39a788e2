"""Which `.env` file the settings come from, and its keys that look like a misspelt setting.

Paths in the settings are relative to the working directory, so `lorabot run` and `migrate` say
at start which file they read (or that there is none) and where the database is. A `.env` key
that is not a setting is ignored by the settings loader; one that looks like ours (`WEBHOOK_PROT`,
`DISCROD_TOKEN`, `MAX_IMAGE` ...) is almost always a typo, so it gets a warning naming the
setting that was probably meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from dotenv import dotenv_values

#: Where the settings come from when no --env-file is given (relative to the working directory).
DEFAULT_ENV_FILE = ".env"


class EnvFileMissing(Exception):
    """An --env-file given explicitly does not exist; the message says which and what to do."""


def resolve_env_file(explicit: str | None) -> Path | None:
    """The .env file to read: the one given (it must exist), else ./.env if there is one, else None."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise EnvFileMissing(
                f"--env-file: {path.absolute()} does not exist; give the path of an existing file, "
                f"or leave --env-file out to read ./{DEFAULT_ENV_FILE} (if any) and the environment"
            )
        return path.absolute()
    default = Path(DEFAULT_ENV_FILE)
    return default.absolute() if default.is_file() else None


def describe_env_file(path: Path | None) -> str:
    """One line for the start-up log: the file the settings were read from, or that there is none."""
    if path is None:
        return f"settings: no {DEFAULT_ENV_FILE} file in {Path.cwd()}; reading the environment only"
    return f"settings: {path} and the environment (the environment wins)"


def describe_database(database_url: str) -> str:
    """One line for the start-up log: the absolute path of the database DATABASE_URL names."""
    path = database_url.removeprefix("sqlite:///")
    return f"database: {path if path == ':memory:' else Path(path).absolute()}"


def misspelt_keys(path: Path | None, known: Iterable[str]) -> list[str]:
    """A warning for each key of the .env file that is not a setting but looks like one: close to
    a setting's name, or starting with the first word of one (`WEBHOOK_`, `MAX_`, `SDAPI_` ...)."""
    if path is None:
        return []
    names = {name.upper() for name in known}
    prefixes = {name.split("_", 1)[0] + "_" for name in names if "_" in name}
    warnings = []
    for key in dotenv_values(path):
        upper = key.upper()
        if upper in names:
            continue
        close = difflib.get_close_matches(upper, names, n=1, cutoff=0.8)
        if not close and not upper.startswith(tuple(prefixes)):
            continue  # not ours (another program's variable): none of our business
        guess = close or difflib.get_close_matches(upper, names, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]}?" if guess else ".env.example lists every setting"
        warnings.append(f"{path}: {key} is not a lorabot setting and is ignored; {hint}")
    return warnings
