"""`${NAME}` of the `ports` section, replaced by an instance's allocated ports.

Which strings take part is declared in the model (`checks.PortRefs` on their type): `run`,
`build`, `env` values, `ready` and `listen`, as the contract lists them.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from devsupervisor.config.checks import PortRefs
from devsupervisor.config.names import PORT_REF
from devsupervisor.config.walk import is_union, type_hints, unwrap

T = TypeVar("T")
_REF = re.compile(PORT_REF)


def substitute_ports(config: T, ports: Mapping[str, int]) -> T:
    """A copy of `config` with `${NAME}` replaced by `ports[NAME]` in the strings that take ports.

    A `${NAME}` that `ports` does not hold is left as written: in a shell string it may be a
    shell variable. Everything else is returned unchanged (the same objects).
    """

    def replace(match: re.Match[str]) -> str:
        return str(ports[match[1]]) if match[1] in ports else match[0]

    return typing.cast(T, _walk(type(config), config, lambda text: _REF.sub(replace, text)))


def _walk(tp: Any, value: Any, sub: typing.Callable[[str], str]) -> Any:
    inner, checks = unwrap(tp)
    if value is None or isinstance(value, bool):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = type_hints(type(value))
        changes = {
            f.name: _walk(hints[f.name], getattr(value, f.name), sub)
            for f in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    if is_union(inner):
        # The member that holds this value: the one whose bare type matches it.
        for member in typing.get_args(inner):
            bare = unwrap(member)[0]
            origin = typing.get_origin(bare) or bare
            if isinstance(origin, type) and isinstance(value, origin):
                return _walk(member, value, sub)
        return value
    origin = typing.get_origin(inner)
    if origin is tuple:
        item = typing.get_args(inner)[0]
        return tuple(_walk(item, v, sub) for v in value)
    if origin is dict:
        item = typing.get_args(inner)[1]
        return {k: _walk(item, v, sub) for k, v in value.items()}
    if isinstance(value, str) and any(isinstance(c, PortRefs) for c in checks):
        return sub(value)
    return value
