"""Build the domain's records from a database row by their field names.

Each store says only how its columns differ from the record's types (a decoder per column: ISO
text to datetimes on SQLite, text to enums on both); every other column is taken as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Decoder = Callable[[Any], Any]


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
    return names


def build(cls: type[T], row: Row, decoders: Mapping[str, Decoder]) -> T:
    """`cls(**row)`, field by field, each column passed through its decoder if it has one."""
    values = {}
    for name in _field_names(cls):
        value = row[name]
        decode = decoders.get(name)
        values[name] = decode(value) if decode is not None else value
    return cls(**values)
