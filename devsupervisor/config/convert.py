"""Raw YAML data -> the model, by walking the model's type hints. Generic: no key is named here.

What each type accepts:
- a dataclass: a mapping with its fields as keys; unknown keys fail with a did-you-mean, fields
  without a default are required, absent ones take the default (nested sections and paths in it
  are converted like written values, so they resolve too); `ONE_OF` names keys of which exactly
  one must be given;
- `X | None`: X, or the key left out; `A | Literal[...]`: whichever member accepts the value;
- `tuple[X, ...]`: a list; `dict[K, V]`: a mapping with keys checked as K;
- `Literal[...]`: one of the values; `signal.Signals`: a signal name, with or without SIG;
- `str` (non-empty), `int`, `float`, `bool`, `Path` (resolved against the config file);
- `Annotated[T, Check, ...]`: T, then each check (see `checks`).
"""

from __future__ import annotations

import dataclasses
import signal
import typing
from pathlib import Path
from typing import Any, Literal

from devsupervisor.config.invalid import Invalid, KeyPath, describe, did_you_mean
from devsupervisor.config.walk import is_union, to_data, type_hints, unwrap, yaml_fields

# A fixed list (not all of `signal.Signals`) so the schema is the same on every platform.
SIGNALS = ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL")
SIGNAL_NAMES = tuple(f"SIG{s}" for s in SIGNALS) + SIGNALS
_ARTICLE = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def expected(tp: Any) -> str:
    """The noun phrase for "expected ..., got ..." messages."""
    tp, checks = unwrap(tp)
    for check in checks:
        if check.expected:
            return check.expected
    origin = typing.get_origin(tp)
    if is_union(tp):
        return " or ".join(expected(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return " or ".join(describe(v) if isinstance(v, bool) else str(v) for v in tp.__args__)
    if origin is tuple:
        return f"a list of {_plural(expected(typing.get_args(tp)[0]))}"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is signal.Signals:
        return "a signal name such as SIGTERM or TERM"
    return _ARTICLE.get(getattr(tp, "__name__", ""), "a string")


def _plural(phrase: str) -> str:
    # "a string" -> "strings"; good enough for the handful of item kinds we list.
    for article in ("a ", "an "):
        if phrase.startswith(article):
            return phrase[len(article) :] + "s"
    return phrase


class Converter:
    """Converts raw data into a model type; relative paths resolve against `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def convert(self, tp: Any, value: object, path: KeyPath) -> Any:
        """Raises: Invalid at the first problem, with its key path."""
        inner, checks = unwrap(tp)
        for check in checks:
            value = check.coerce(value)
        out = self._typed(inner, tp, value, path)
        for check in checks:
            if (problem := check.problem(out)) is not None:
                raise Invalid(path, problem)
            out = check.resolve(out, self.base)
        return out

    def wrong_type(self, tp: Any, value: object, path: KeyPath) -> Invalid:
        hints = "".join(check.hint(value) for check in unwrap(tp)[1])
        return Invalid(path, f"expected {expected(tp)}, got {describe(value)}{hints}")

    def _typed(self, tp: Any, outer: Any, value: object, path: KeyPath) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.section(typing.cast(type, tp), value, path)
        if is_union(tp):
            return self._union(tp, value, path)
        if origin is Literal:
            if value in tp.__args__ and type(value) in {type(a) for a in tp.__args__}:
                return value
            choices = [str(a) for a in tp.__args__]
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise Invalid(path, f"expected {expected(tp)}, got {describe(value)}{hint}")
        if origin is tuple:
            if not isinstance(value, list):
                raise self.wrong_type(outer, value, path)
            item = typing.get_args(tp)[0]
            return tuple(self.convert(item, v, (*path, i)) for i, v in enumerate(value))
        if origin is dict:
            return self._mapping(tp, outer, value, path)
        if tp is signal.Signals:
            if not isinstance(value, str) or value not in SIGNAL_NAMES:
                hint = did_you_mean(value, SIGNAL_NAMES) if isinstance(value, str) else ""
                raise Invalid(path, f"expected {expected(tp)}, got {describe(value)}{hint}")
            return signal.Signals[value if value.startswith("SIG") else f"SIG{value}"]
        return self._scalar(tp, outer, value, path)

    def _scalar(self, tp: Any, outer: Any, value: object, path: KeyPath) -> Any:
        # bool is an int in Python; `restarts: true` is a mistake, not 1.
        if isinstance(value, bool) and tp is not bool:
            raise self.wrong_type(outer, value, path)
        if tp is float and isinstance(value, int | float):
            return float(value)
        if tp in (str, Path) and isinstance(value, str):
            if not value and not any(c.allow_empty for c in unwrap(outer)[1]):
                raise Invalid(path, "must not be empty")
            return value if tp is str else (self.base / Path(value).expanduser()).resolve()
        if tp in (int, bool) and isinstance(value, tp):
            return value
        raise self.wrong_type(outer, value, path)

    def _union(self, tp: Any, value: object, path: KeyPath) -> Any:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return self.convert(members[0], value, path)
        # A mapping goes to the section member, so its own errors (unknown key...) are reported.
        for member in members:
            if isinstance(value, dict) == dataclasses.is_dataclass(unwrap(member)[0]):
                try:
                    return self.convert(member, value, path)
                except Invalid:
                    if isinstance(value, dict):
                        raise
        raise self.wrong_type(tp, value, path)

    def _mapping(self, tp: Any, outer: Any, value: object, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.wrong_type(outer, value, path)
        key_type, value_type = typing.get_args(tp)
        out: dict[str, Any] = {}
        for key, item in value.items():
            self.convert(key_type, key, (*path, str(key)))
            named = unwrap(value_type)[0]
            if dataclasses.is_dataclass(named):
                out[key] = self.section(typing.cast(type, named), item, (*path, key), key=key)
            else:
                out[key] = self.convert(value_type, item, (*path, key))
        return out

    def section(self, cls: type, value: object, path: KeyPath, *, key: str = "") -> Any:
        """A mapping as an instance of the dataclass `cls`; `key` fills its `key` field."""
        if not isinstance(value, dict):
            raise self.wrong_type(cls, value, path)
        fields = yaml_fields(cls)
        known = [f.name for f in fields]
        for name in value:
            if name not in known:
                hint = did_you_mean(str(name), known) or f" (expected one of: {', '.join(known)})"
                raise Invalid((*path, str(name)), f"unknown key{hint}")
        one_of: tuple[str, ...] = getattr(cls, "ONE_OF", ())
        if one_of:
            present = [k for k in one_of if k in value]
            listed = ", ".join(one_of)
            if not present:
                raise Invalid(path, f"needs exactly one of: {listed}")
            if len(present) > 1:
                raise Invalid(path, f"only one of {listed} may be given, got {', '.join(present)}")
        hints = type_hints(cls)
        kwargs: dict[str, Any] = {
            f.name: key for f in dataclasses.fields(cls) if f.metadata.get("key")
        }
        for f in fields:
            if f.name in value:
                kwargs[f.name] = self.convert(hints[f.name], value[f.name], (*path, f.name))
            elif f.default is not dataclasses.MISSING:
                kwargs[f.name] = self._default(hints[f.name], f.default, (*path, f.name))
            elif f.default_factory is not dataclasses.MISSING:
                kwargs[f.name] = f.default_factory()
            else:
                raise Invalid((*path, f.name), "required key is missing")
        return cls(**kwargs)

    def _default(self, tp: Any, default: object, path: KeyPath) -> Any:
        # Our own defaults need no checking, only resolving: nested sections may hold paths.
        if dataclasses.is_dataclass(default):
            return self.convert(tp, to_data(default), path)
        if isinstance(default, Path):
            return (self.base / default).resolve()
        return default
