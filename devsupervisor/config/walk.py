"""Reading the model's declaration: type hints, YAML fields, and a model value as plain data.

Shared by `convert` (validation), `render`, `schema` and `ports`, which all walk the same hints.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import types
import typing
from pathlib import Path
from typing import Any, Union

from devsupervisor.config.checks import Check


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def yaml_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of `cls` that are keys in the file (not `key` or `internal` ones)."""
    return [
        f
        for f in dataclasses.fields(cls)
        if not f.metadata.get("key") and not f.metadata.get("internal")
    ]


def unwrap(tp: Any) -> tuple[Any, tuple[Check, ...]]:
    """`Annotated[T, c1, c2]` -> `(T, (c1, c2))`; any other type -> `(type, ())`."""
    if typing.get_origin(tp) is typing.Annotated:
        return tp.__origin__, tuple(m for m in tp.__metadata__ if isinstance(m, Check))
    return tp, ()


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def to_data(value: object) -> object:
    """A model value as the plain data of a config file: what `convert` turns back into it.

    Absent optional sections (None) are left out: `null` would not load back.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_data(getattr(value, f.name))
            for f in yaml_fields(type(value))
            if getattr(value, f.name) is not None
        }
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, signal.Signals):
        return value.name
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    return value
