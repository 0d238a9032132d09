"""Constraints attached to the model's types with `Annotated`, and the named types built from them.

A check adds to what the type alone says: a pattern, a range, a hint for a common mistake, how a
value resolves against the config file's directory. Each one also describes itself as JSON Schema,
so `convert` (validation) and `schema` read the same object and cannot drift.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from devsupervisor.config import names
from devsupervisor.config.invalid import describe

JsonSchema = dict[str, Any]

MAX_PORT = 65535
# AF_UNIX paths are limited to 108 bytes including the terminating NUL (Linux sun_path).
MAX_UNIX_PATH = 107
# Units users reach for out of habit; the hint converts them to the plain number we want.
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_WITH_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")
_PORT = rf"(?:[0-9]{{1,5}}|{names.PORT_REF})"
_HOST = r"(?:\[[0-9a-fA-F:.]+\]|[^\s:\[\]/]+)"
TCP_ADDRESS = rf"{_HOST}:{_PORT}"


class Check:
    """One constraint on a value. Every hook is optional; the defaults accept anything."""

    # Noun phrase replacing the type's own in "expected ..., got ..." (e.g. "a number of seconds").
    expected: str | None = None
    # Strings are non-empty unless a check says otherwise.
    allow_empty = False

    def coerce(self, value: object) -> object:
        """Turn an acceptable raw value into the type's own (e.g. a number into a string)."""
        return value

    def hint(self, value: object) -> str:
        """Appended to the wrong-type message: how to write `value` instead."""
        return ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value of the right type, or None."""
        return None

    def resolve(self, value: Any, base: Path) -> Any:
        """The value with any relative path taken from `base` (the config file's directory)."""
        return value

    def schema(self) -> JsonSchema:
        return {}


class Pattern(Check):
    def __init__(self, pattern: str, hint: str) -> None:
        self.pattern = pattern
        self.what = hint

    def problem(self, value: Any) -> str | None:
        if re.fullmatch(self.pattern, value):
            return None
        return f"{describe(value)} is not {self.what}"

    def schema(self) -> JsonSchema:
        return {"pattern": f"^(?:{self.pattern})$"}


class Range(Check):
    """An integer from `low` to `high` (inclusive; no upper bound when None)."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high

    def problem(self, value: Any) -> str | None:
        if self.high is None:
            return f"must be at least {self.low}, got {value}" if value < self.low else None
        if not self.low <= value <= self.high:
            return f"must be between {self.low} and {self.high}, got {value}"
        return None

    def schema(self) -> JsonSchema:
        out: JsonSchema = {"minimum": self.low}
        if self.high is not None:
            out["maximum"] = self.high
        return out


class Duration(Check):
    """A plain number of seconds. `positive` excludes zero."""

    expected = "a number of seconds"

    def __init__(self, *, positive: bool) -> None:
        self.positive = positive

    def hint(self, value: object) -> str:
        if not isinstance(value, str):
            return ""
        match = _DURATION_WITH_UNIT.fullmatch(value.lower())
        if match and match.group(2) in _DURATION_UNITS:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            return f" (durations are plain numbers of seconds: write {seconds:g})"
        return " (durations are plain numbers of seconds, e.g. 5 or 0.5)"

    def problem(self, value: Any) -> str | None:
        if self.positive and value <= 0:
            return f"must be greater than 0, got {value:g}"
        if value < 0:
            return f"must not be negative, got {value:g}"
        return None

    def schema(self) -> JsonSchema:
        return {"exclusiveMinimum" if self.positive else "minimum": 0}


class MinItems(Check):
    def __init__(self, count: int, noun: str) -> None:
        self.count, self.noun = count, noun

    def problem(self, value: Any) -> str | None:
        return f"needs at least {self.count} {self.noun}" if len(value) < self.count else None

    def schema(self) -> JsonSchema:
        # Applies to lists and mappings alike; the converter only asks for the one that fits.
        return {"minItems": self.count, "minProperties": self.count}


class Exists(Check):
    """A resolved path that must exist (as a directory when `directory`)."""

    def __init__(self, *, directory: bool) -> None:
        self.directory = directory

    def problem(self, value: Any) -> str | None:
        path: Path = value
        if self.directory and not path.is_dir():
            return f"{'not a directory' if path.exists() else 'no such directory'}: {path}"
        if not self.directory and not path.exists():
            return f"no such file or directory: {path}"
        return None


class RegexText(Check):
    def problem(self, value: Any) -> str | None:
        try:
            re.compile(value)
        except re.error as exc:
            return f"not a valid regular expression: {exc}"
        return None

    def schema(self) -> JsonSchema:
        return {"format": "regex"}


class TcpAddress(Pattern):
    """`host:port`; the port may be `${NAME}` of the `ports` section."""

    def __init__(self) -> None:
        super().__init__(TCP_ADDRESS, "host:port")

    def problem(self, value: Any) -> str | None:
        if problem := super().problem(value):
            return problem
        return _port_problem(value.rsplit(":", 1)[1])


class ListenAddress(Check):
    """`HOST:PORT` or `unix:PATH` (a relative PATH is taken from the config file's directory)."""

    def problem(self, value: Any) -> str | None:
        if value.startswith("unix:"):
            path = value.removeprefix("unix:")
            if not path:
                return "unix: needs a socket path, e.g. unix:run/platform.sock"
            if len(os.fsencode(path)) > MAX_UNIX_PATH and not re.search(names.PORT_REF, path):
                return f"socket path is longer than {MAX_UNIX_PATH} bytes: {path}"
            return None
        if not re.fullmatch(TCP_ADDRESS, value):
            return f"{describe(value)} is not HOST:PORT or unix:PATH"
        return _port_problem(value.rsplit(":", 1)[1])

    def resolve(self, value: Any, base: Path) -> Any:
        if not value.startswith("unix:"):
            return value
        return f"unix:{(base / Path(value.removeprefix('unix:')).expanduser()).resolve()}"

    def schema(self) -> JsonSchema:
        return {"pattern": rf"^(?:unix:.+|{TCP_ADDRESS})$"}


def _port_problem(port: str) -> str | None:
    if port.startswith("$"):
        return None
    return None if 0 < int(port) <= MAX_PORT else f"port {port} is out of range 1-{MAX_PORT}"


class EnvValue(Check):
    """An environment value: a string, or a number kept as written. May be empty."""

    allow_empty = True

    def coerce(self, value: object) -> object:
        # true/false/null would silently become "True"/"None": make the user quote them.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    def hint(self, value: object) -> str:
        return " (quote it)"

    def schema(self) -> JsonSchema:
        return {"type": ["string", "number"]}


class PortRefs(Check):
    """Marks a string in which `${NAME}` of `ports` is replaced (`ports.substitute_ports`)."""


# Named types: the vocabulary of `model`.
ProjectName = Annotated[str, Pattern(names.PROJECT_NAME, names.PROJECT_NAME_HINT)]
StackName = Annotated[
    str, Pattern(names.STACK_NAME, "a stack name (letters, digits, '.', '-', '_')")
]
ServiceName = Annotated[str, Pattern(names.SERVICE_NAME, "a compose service name")]
EnvName = Annotated[str, Pattern(names.ENV_NAME, "a valid environment variable name")]
Seconds = Annotated[float, Duration(positive=False)]
PositiveSeconds = Annotated[float, Duration(positive=True)]
Port = Annotated[int, Range(1, MAX_PORT)]
ExistingDir = Annotated[Path, Exists(directory=True)]
ExistingPath = Annotated[Path, Exists(directory=False)]
Shell = Annotated[str, PortRefs()]
HttpUrl = Annotated[str, Pattern(r"https?://\S+", "an http:// or https:// URL"), PortRefs()]
EngineHost = Annotated[
    str,
    Pattern(
        r"ssh://(?:[^@\s/:]+@)?[^@\s/:]+(?::[0-9]{1,5})?|unix:///\S+|tcp://[^\s/]+:[0-9]{1,5}",
        "an engine address: ssh://USER@HOST[:PORT], unix:///PATH or tcp://HOST:PORT",
    ),
]
