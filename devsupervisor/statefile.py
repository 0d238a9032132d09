"""What the daemon remembers between runs: the chosen stack, every platform process it started,
the ports given to this instance, and the source fingerprint of the last successful build per
platform mode.

Writing is a side effect that never vetoes the lifecycle: `StateStore.save` writes atomically
(temp file in the same directory, fsync, rename, fsync of the directory) so a `kill -9` or a
power cut mid-write leaves the previous state, and never raises: a failure (disk full, read-only
file system, a directory at the path) is logged once, kept in `StateStore.error` for `status`,
and cleared by the next save that works.

Reading is lenient field by field: whatever cannot be trusted (a negative or huge pid, wrong
types, truncated JSON, a list, bytes that are not UTF-8) is dropped with a warning and the rest
is kept, so no state file can stop the daemon from starting.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devsupervisor.logs.pipeline import get_logger

log = get_logger()

# Linux's pid_max can be at most 2**22 (PID_MAX_LIMIT): anything above is not a pid.
PID_MAX = 2**22
# A state file is a few hundred bytes; reading more than this is reading something else.
MAX_BYTES = 1024 * 1024
# Ports given to an instance are user ports (the contract, "Instances").
PORT_RANGE = range(1, 65536)


@dataclass(frozen=True)
class PlatformRecord:
    """A platform process devsup started: the pid and its start time tell it from a reused pid."""

    pid: int
    create_time: float


@dataclass
class SavedState:
    stack: str | None = None
    # Every platform process still alive that this daemon started (more than one during a swap).
    platforms: list[PlatformRecord] = field(default_factory=list)
    # mode -> fingerprint of the sources the last successful build in that mode was made from
    builds: dict[str, str] = field(default_factory=dict)
    # port NAME -> the port this instance was given (kept while free, the contract, "Instances")
    ports: dict[str, int] = field(default_factory=dict)
    # The config file of this instance's checkout: once it is gone (a removed worktree), other
    # instances may take its ports.
    checkout: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "platforms": [{"pid": p.pid, "create_time": p.create_time} for p in self.platforms],
            "builds": dict(self.builds),
            "ports": dict(self.ports),
            "checkout": self.checkout,
        }


class StateStore:
    """The state file at `path`: `load()` it once, `save()` after every change.

    `error` is the reason the last save failed (None once a save works again): the daemon shows
    it in `status`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None

    def load(self) -> SavedState:
        """The saved state; an empty one when the file is missing or unreadable."""
        return load(self.path)

    def save(self, state: SavedState) -> bool:
        """Replace the file with `state`. Never raises; returns whether it was written."""
        try:
            data = json.dumps(state.to_json(), indent=2, allow_nan=False) + "\n"
            _write_atomically(self.path, data.encode("utf-8"))
        except (OSError, TypeError, ValueError) as exc:
            error = f"cannot write state file {self.path}: {_describe(exc)}"
            if error != self.error:  # once per distinct failure, not on every save
                log.error("state.write_failed", path=str(self.path), error=error)
            self.error = error
            return False
        if self.error is not None:
            log.info("state.write_recovered", path=str(self.path))
            self.error = None
        return True


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp: O_EXCL with a random name, so nothing planted in the directory is followed.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --- reading ------------------------------------------------------------------------------------


def load(path: Path) -> SavedState:
    """Read the state file leniently (see the module docstring). Never raises."""
    try:
        with path.open("rb") as source:
            raw_bytes = source.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return SavedState()
    except OSError as exc:
        log.warning("state.unreadable", path=str(path), error=_describe(exc))
        return SavedState()
    if len(raw_bytes) > MAX_BYTES:
        log.warning("state.unreadable", path=str(path), error=f"over {MAX_BYTES} bytes")
        return SavedState()
    try:
        raw = json.loads(raw_bytes.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        log.warning("state.unreadable", path=str(path), error=str(exc).splitlines()[0])
        return SavedState()
    if not isinstance(raw, dict):
        log.warning("state.unreadable", path=str(path), error="not a JSON object")
        return SavedState()
    return _Reader(path, raw).state()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Reader:
    """Takes each field it can trust from a decoded state object; warns about the rest."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self._path = path
        self._raw = raw

    def state(self) -> SavedState:
        return SavedState(
            stack=self._stack(),
            platforms=self._platforms(),
            builds=self._mapping("builds", _is_str),
            ports=self._mapping("ports", _is_port),
            checkout=self._checkout(),
        )

    def _ignore(self, key: str, value: Any, reason: str) -> None:
        log.warning(
            "state.field_ignored",
            path=str(self._path),
            field=key,
            value=repr(value)[:80],
            reason=reason,
        )

    def _stack(self) -> str | None:
        stack = self._raw.get("stack")
        if stack is None or (isinstance(stack, str) and stack):
            return stack
        self._ignore("stack", stack, "not a non-empty string")
        return None

    def _checkout(self) -> str | None:
        checkout = self._raw.get("checkout")
        if checkout is None or (isinstance(checkout, str) and checkout):
            return checkout
        self._ignore("checkout", checkout, "not a non-empty string")
        return None

    def _platforms(self) -> list[PlatformRecord]:
        records: list[PlatformRecord] = []
        listed = self._raw.get("platforms", [])
        if not isinstance(listed, list):
            self._ignore("platforms", listed, "not a list")
            listed = []
        for index, item in enumerate(listed):
            record = _platform(item)
            if record is None:
                self._ignore(f"platforms[{index}]", item, "not {pid, create_time} of a process")
            elif record not in records:
                records.append(record)
        # Files written before `platforms` existed name one platform in two top-level keys.
        if "platform_pid" in self._raw or "platform_create_time" in self._raw:
            legacy = {
                "pid": self._raw.get("platform_pid"),
                "create_time": self._raw.get("platform_create_time"),
            }
            record = _platform(legacy)
            if record is not None and record not in records:
                records.append(record)
            elif record is None and legacy["pid"] is not None:
                self._ignore("platform_pid", legacy, "not the pid and start time of a process")
        return records

    def _mapping(self, key: str, is_valid: Callable[[Any], bool]) -> dict[str, Any]:
        value = self._raw.get(key, {})
        if not isinstance(value, dict):
            self._ignore(key, value, "not an object")
            return {}
        kept: dict[str, Any] = {}
        for name, item in value.items():
            if is_valid(item):
                kept[name] = item
            else:
                self._ignore(f"{key}.{name}", item, "wrong type or out of range")
        return kept


def _platform(item: Any) -> PlatformRecord | None:
    if not isinstance(item, dict):
        return None
    pid, created = item.get("pid"), item.get("create_time")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
        return None
    if not isinstance(created, int | float) or isinstance(created, bool):
        return None
    if not math.isfinite(created) or created < 0:
        return None
    return PlatformRecord(pid, float(created))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_port(value: Any) -> bool:
    return _is_int(value) and value in PORT_RANGE
