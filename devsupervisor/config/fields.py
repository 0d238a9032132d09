"""The kinds of value a config key can hold. Each kind both checks a raw YAML value and describes
itself as JSON Schema, so the loader and the published schema come from one object and cannot drift.

Checking is structural only (types, choices, patterns, unknown keys, defaults). Rules that span keys
or touch the filesystem live in `load.py`. Failures raise `Invalid` with the key path; `load.py`
turns that into a `ConfigError` carrying the file name and the line of the key.
"""

from __future__ import annotations

import difflib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

KeyPath = tuple[str | int, ...]
JsonSchema = dict[str, Any]

# Longer values are cut in messages so an error stays one readable line.
MAX_SHOWN_CHARS = 40
# Units users reach for out of habit; the hint converts them to the plain number we want.
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_WITH_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


class Invalid(Exception):
    """A value failed a check at `path`. Internal: `load.py` converts it into a ConfigError."""

    def __init__(
        self, path: KeyPath, problem: str, position: tuple[int, int] | None = None
    ) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem
        # (line, column) when the raiser knows it better than the key path does.
        self.position = position


def dotted(path: KeyPath) -> str:
    """`("stacks", "full", "files", 1)` -> `stacks.full.files[1]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def describe(value: object) -> str:
    """A short rendering of a YAML value for messages, in YAML's own words where they differ."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= MAX_SHOWN_CHARS else value[:MAX_SHOWN_CHARS] + "..."
        return repr(shown)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Kind(ABC):
    """What one key may hold."""

    # Noun phrase for "expected ..., got ..." messages.
    expected: str = "a value"

    @abstractmethod
    def check(self, value: object, path: KeyPath) -> object:
        """Return the normalised value (defaults filled in) or raise Invalid."""

    @abstractmethod
    def json_schema(self) -> JsonSchema:
        """This kind as a JSON Schema (draft 2020-12) fragment."""

    def wrong_type(self, value: object, path: KeyPath) -> Invalid:
        return Invalid(path, f"expected {self.expected}, got {describe(value)}")


@dataclass(frozen=True)
class Text(Kind):
    """A non-empty string, optionally matching `pattern` and passing `validator`."""

    pattern: str | None = None
    # What the pattern means, for the message when it does not match.
    pattern_hint: str = ""
    # Extra check the pattern cannot express; returns a problem or None.
    validator: Callable[[str], str | None] | None = None
    # JSON Schema `format` (annotation only), e.g. "regex".
    format: str | None = None
    expected: str = "a string"

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, str):
            raise self.wrong_type(value, path)
        if not value:
            raise Invalid(path, "must not be empty")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(path, f"{describe(value)} is not {self.pattern_hint}")
        if self.validator is not None and (problem := self.validator(value)):
            raise Invalid(path, problem)
        return value

    def json_schema(self) -> JsonSchema:
        schema: JsonSchema = {"type": "string", "minLength": 1}
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$"
        if self.format is not None:
            schema["format"] = self.format
        return schema


@dataclass(frozen=True)
class Integer(Kind):
    minimum: int = 0
    expected: str = "an integer"

    def check(self, value: object, path: KeyPath) -> object:
        # bool is an int in Python; `restarts: true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(value, path)
        if value < self.minimum:
            raise Invalid(path, f"must be at least {self.minimum}, got {value}")
        return value

    def json_schema(self) -> JsonSchema:
        return {"type": "integer", "minimum": self.minimum}


@dataclass(frozen=True)
class Seconds(Kind):
    """A duration: a plain number of seconds. `positive` excludes zero."""

    positive: bool = False
    expected: str = "a number of seconds"

    def check(self, value: object, path: KeyPath) -> object:
        if isinstance(value, str):
            raise Invalid(
                path, f"expected a number of seconds, got {describe(value)}{_hint(value)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong_type(value, path)
        if self.positive and value <= 0:
            raise Invalid(path, f"must be greater than 0, got {value}")
        if value < 0:
            raise Invalid(path, f"must not be negative, got {value}")
        return float(value)

    def json_schema(self) -> JsonSchema:
        bound = "exclusiveMinimum" if self.positive else "minimum"
        return {"type": "number", bound: 0}


def _hint(text: str) -> str:
    match = _DURATION_WITH_UNIT.fullmatch(text.lower())
    if match and match.group(2) in _DURATION_UNITS:
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        return f" (durations are plain numbers of seconds: write {seconds:g})"
    return " (durations are plain numbers of seconds, e.g. 5 or 0.5)"


@dataclass(frozen=True)
class Boolean(Kind):
    expected: str = "true or false"

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, bool):
            raise self.wrong_type(value, path)
        return value

    def json_schema(self) -> JsonSchema:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Choice(Kind):
    values: tuple[str, ...]
    # Overrides the listing of every value in messages when the list is long.
    label: str = ""

    @property
    def expected(self) -> str:  # type: ignore[override]
        return self.label or " or ".join(self.values)

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, str) or value not in self.values:
            hint = did_you_mean(value, self.values) if isinstance(value, str) else ""
            raise Invalid(path, f"expected {self.expected}, got {describe(value)}{hint}")
        return value

    def json_schema(self) -> JsonSchema:
        return {"enum": list(self.values)}


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind
    min_items: int = 0

    @property
    def expected(self) -> str:  # type: ignore[override]
        return f"a list of {_plural(self.item.expected)}"

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, list):
            raise self.wrong_type(value, path)
        if len(value) < self.min_items:
            raise Invalid(path, f"needs at least {self.min_items} item(s)")
        return [self.item.check(v, (*path, i)) for i, v in enumerate(value)]

    def json_schema(self) -> JsonSchema:
        schema: JsonSchema = {"type": "array", "items": self.item.json_schema()}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


def _plural(phrase: str) -> str:
    # "a string" -> "strings"; good enough for the handful of item kinds we list.
    for article in ("a ", "an "):
        if phrase.startswith(article):
            return phrase[len(article) :] + "s"
    return phrase


@dataclass(frozen=True)
class Environment(Kind):
    """Environment variables: names to strings. Numbers are accepted and kept as written."""

    name_pattern: str = r"[A-Za-z_][A-Za-z0-9_]*"
    expected: str = "a mapping of variable names to strings"

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, dict):
            raise self.wrong_type(value, path)
        out: dict[str, str] = {}
        for name, val in value.items():
            if not isinstance(name, str) or not re.fullmatch(self.name_pattern, name):
                raise Invalid((*path, str(name)), "not a valid environment variable name")
            # true/false/null would silently become "True"/"None": make the user quote them.
            if isinstance(val, bool) or not isinstance(val, str | int | float):
                raise Invalid((*path, name), f"expected a string, got {describe(val)} (quote it)")
            out[name] = str(val)
        return out

    def json_schema(self) -> JsonSchema:
        return {
            "type": "object",
            "propertyNames": {"pattern": f"^(?:{self.name_pattern})$"},
            "additionalProperties": {"type": ["string", "number"]},
        }


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Field:
    """One key of a mapping. Absent optional keys without a default come out as None."""

    name: str
    kind: Kind
    required: bool = False
    # A raw (YAML-level) value; for a mapping kind, `{}` means "every inner default".
    default: Any = _NO_DEFAULT
    description: str = ""

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True)
class Section(Kind):
    """A mapping with fixed keys. Unknown keys are errors, with a did-you-mean."""

    fields: tuple[Field, ...]
    # Exactly one of these keys must be present (e.g. ready: http | tcp | log).
    exactly_one_of: tuple[str, ...] = ()
    expected: str = "a mapping"

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, dict):
            raise self.wrong_type(value, path)
        known = [f.name for f in self.fields]
        for key in value:
            if key not in known:
                hint = did_you_mean(str(key), known) or f" (expected one of: {', '.join(known)})"
                raise Invalid((*path, str(key)), f"unknown key{hint}")
        self._check_exactly_one(value, path)
        out: dict[str, object] = {}
        for f in self.fields:
            if f.name in value:
                out[f.name] = f.kind.check(value[f.name], (*path, f.name))
            elif f.required:
                raise Invalid((*path, f.name), "required key is missing")
            elif f.has_default:
                # Defaults go through the same check so nested mappings get their defaults too.
                out[f.name] = f.kind.check(_copy(f.default), (*path, f.name))
            else:
                out[f.name] = None
        return out

    def _check_exactly_one(self, value: dict[Any, Any], path: KeyPath) -> None:
        if not self.exactly_one_of:
            return
        present = [k for k in self.exactly_one_of if k in value]
        names = ", ".join(self.exactly_one_of)
        if not present:
            raise Invalid(path, f"needs exactly one of: {names}")
        if len(present) > 1:
            raise Invalid(path, f"only one of {names} may be given, got {', '.join(present)}")

    def json_schema(self) -> JsonSchema:
        properties: dict[str, JsonSchema] = {}
        for f in self.fields:
            prop = f.kind.json_schema()
            if f.description:
                prop["description"] = f.description
            if f.has_default and not isinstance(f.kind, Section):
                prop["default"] = f.default
            properties[f.name] = prop
        schema: JsonSchema = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        if self.exactly_one_of:
            schema["oneOf"] = [{"required": [k]} for k in self.exactly_one_of]
        return schema


@dataclass(frozen=True)
class NamedSections(Kind):
    """User-named entries that share one shape (e.g. stacks). Order is kept: it is meaningful."""

    value: Kind
    key: Text = field(default_factory=Text)
    min_items: int = 1
    expected: str = "a mapping"

    def check(self, value: object, path: KeyPath) -> object:
        if not isinstance(value, dict):
            raise self.wrong_type(value, path)
        if len(value) < self.min_items:
            raise Invalid(path, f"needs at least {self.min_items} entry")
        out: dict[str, object] = {}
        for name, entry in value.items():
            self.key.check(name, (*path, str(name)))
            out[name] = self.value.check(entry, (*path, name))
        return out

    def json_schema(self) -> JsonSchema:
        key_schema = self.key.json_schema()
        return {
            "type": "object",
            "minProperties": self.min_items,
            "propertyNames": {k: v for k, v in key_schema.items() if k != "type"},
            "additionalProperties": self.value.json_schema(),
        }


def _copy(value: object) -> object:
    # Defaults are shared module-level objects; never hand out a list a caller might mutate.
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value
