"""A server's overrides changed in memory: the part of `update_guild_overrides` both stores share.

Values are compared as JSON, not with `==`: for Python `True == 1` and `[1] == (1,)`, but only
the first pair are different settings once stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def as_stored(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` as they read back from either database (tuples become lists); None stays None
    (back to the default). A value JSON cannot hold raises TypeError before anything is written."""
    return {key: None if value is None else json.loads(json.dumps(value)) for key, value in changes.items()}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def apply_overrides(
    before: Mapping[str, Any], changes: Mapping[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, Any, Any]]]:
    """The overrides after `changes` (from `as_stored`; None removes the key), and each key whose
    value actually changed as (key, old, new), None meaning the default, in the order of `changes`."""
    after = dict(before)
    for key, value in changes.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    changed = [(key, before.get(key), after.get(key)) for key in changes if not _same(before.get(key), after.get(key))]
    return after, changed
