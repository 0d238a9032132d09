"""Structured logging: one structlog pipeline, three sinks.

Every record gets `ts` (ISO 8601 UTC), `level` and `event`, then goes to
- the rotated JSON-lines log file (`$XDG_STATE_HOME/devsup/<project>.log`),
- the console (readable columns on a TTY, key=value lines otherwise, e.g. under journald),
- in-process taps (the daemon feeds `devsup events` and `devsup logs devsup` from them).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

# Big enough for a day of busy edit loops, small enough that `tail` stays instant.
LOG_MAX_BYTES = 5 * 1024 * 1024
# Three old files keep the last crash's context around without growing without bound.
LOG_BACKUPS = 3

EventDict = MutableMapping[str, Any]
Tap = Callable[[dict[str, Any]], None]


class _Fanout:
    """The final processor: writes the record to every sink, then drops it from structlog."""

    def __init__(self, log_file: Path | None, console: TextIO | None, taps: list[Tap]) -> None:
        self._file: logging.Handler | None = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
            )
        self._console = console
        self._render_console: Callable[[Any, str, EventDict], str | bytes]
        if console is not None and console.isatty():
            self._render_console = structlog.dev.ConsoleRenderer(colors=True)
        else:
            self._render_console = structlog.processors.KeyValueRenderer(
                key_order=["ts", "level", "event"], drop_missing=True
            )
        self._taps = taps

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        record = dict(event_dict)
        line = json.dumps(record, default=str, ensure_ascii=False)
        if self._file is not None:
            self._file.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        if self._console is not None:
            rendered = self._render_console(logger, method, dict(event_dict))
            self._console.write(f"{rendered!s}\n")
            self._console.flush()
        for tap in self._taps:
            tap(record)
        raise structlog.DropEvent

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


_current: _Fanout | None = None


def configure(
    log_file: Path | None = None,
    *,
    console: TextIO | None = sys.stderr,
    taps: list[Tap] | None = None,
) -> None:
    """Install the pipeline. Called once by the daemon (and by the CLI with no file)."""
    global _current  # noqa: PLW0603 - structlog's own configuration is process-global too
    if _current is not None:
        _current.close()
    _current = _Fanout(log_file, console, list(taps or []))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            _current,
        ],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def utc_iso(ts: float | None = None) -> str:
    """A wall-clock time (now by default) as ISO 8601 UTC with a Z, like every record's `ts`;
    the form PRODUCT.md gives for every time in status and events."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def get_logger(**bound: Any) -> Any:
    """A structlog logger; modules bind their component name."""
    return structlog.get_logger(**bound)
