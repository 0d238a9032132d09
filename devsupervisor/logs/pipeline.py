"""Structured logging: one structlog pipeline, three sinks, safe to call from any thread.

Every record gets `ts` (ISO 8601 UTC), `level` and `event`, is capped in size (`bounds.py`), then
goes to
- the rotated JSON-lines log file (`$XDG_STATE_HOME/devsup/<project>.log`),
- the console (readable columns on a TTY, key=value lines otherwise, e.g. under journald),
- in-process taps (the daemon feeds `devsup events` and `devsup logs devsup` from them).

Threads: the watchdog observer, `asyncio.to_thread` workers and the docker events thread log
too. File and console are written by one writer at a time (a lock, and the file handler's own
lock around each write, so a rollover never races a write or another rollover). Taps belong to
the event loop (the broadcasters behind them are loop-only): a record logged on another thread is
handed to the loop with `call_soon_threadsafe`, which also wakes an idle loop at once.

Side effects never veto the caller: a console that fails (EPIPE once `devsup run | head` exits)
is dropped and the file goes on; a failing file is reported once on the console. No log call
raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import structlog
from structlog.typing import FilteringBoundLogger

from devsupervisor.logs.bounds import RECORD_MAX_BYTES, cap_record, encode

# Big enough for a day of busy edit loops, small enough that `tail` stays instant.
LOG_MAX_BYTES = 5 * 1024 * 1024
# Three old files keep the last crash's context around without growing without bound.
LOG_BACKUPS = 3

EventDict = MutableMapping[str, Any]
Tap = Callable[[dict[str, Any]], None]
Logger = FilteringBoundLogger


class _LogFile(logging.handlers.RotatingFileHandler):
    """The rotated file; a write error is remembered instead of printed to stderr."""

    error: str | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if self.error is None:
            self.error = repr(exc)


class _Fanout:
    """The final processor: writes the record to every sink, then drops it from structlog."""

    def __init__(
        self,
        log_file: Path | None,
        console: IO[str] | None,
        taps: list[Tap],
        *,
        loop: asyncio.AbstractEventLoop | None,
        max_bytes: int,
        backups: int,
        record_limit: int,
    ) -> None:
        self._lock = threading.Lock()
        self._file: _LogFile | None = None
        if log_file is not None:
            # A log directory that cannot be made or written (read-only, full) is a failing
            # file like any other: reported once on the console, never a reason not to start.
            # `delay` opens the file on the first write, inside the handler's error handling.
            with contextlib.suppress(OSError):
                log_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = _LogFile(
                log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
            )
        self._file_error_reported = False
        self._console = console
        self._render_console: Callable[[Any, str, EventDict], str | bytes]
        if console is not None and _isatty(console):
            self._render_console = structlog.dev.ConsoleRenderer(colors=True)
        else:
            self._render_console = structlog.processors.KeyValueRenderer(
                key_order=["ts", "level", "event"], drop_missing=True
            )
        self._taps = taps
        self._loop = loop
        self._record_limit = record_limit

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        record, line = cap_record(event_dict, self._record_limit)
        notes: list[dict[str, Any]] = []
        with self._lock:
            self._write_file(line, notes)
            self._write_console(logger, method, record, notes)
            for note in notes:  # a sink failed: say so once through the sinks still working
                note_record, note_line = cap_record(note, self._record_limit)
                self._write_file(note_line, [])
                self._write_console(logger, "warning", note_record, [])
        for item in (record, *notes):
            self._deliver(item)
        raise structlog.DropEvent

    def _write_file(self, line: str, notes: list[dict[str, Any]]) -> None:
        if self._file is None:
            return
        # handle() takes the handler's lock: the size check, rollover and write are one step.
        self._file.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        if self._file.error is not None and not self._file_error_reported:
            self._file_error_reported = True
            path, error = self._file.baseFilename, self._file.error
            notes.append(_note("log.file_failed", path=path, error=error))

    def _write_console(
        self, logger: Any, method: str, record: dict[str, Any], notes: list[dict[str, Any]]
    ) -> None:
        console = self._console
        if console is None:
            return
        try:
            rendered: str | bytes = self._render_console(logger, method, dict(record))
        except Exception:  # a value the renderer chokes on must not lose the line
            rendered = encode(record)
        try:
            console.write(f"{rendered!s}\n")
            console.flush()
        except (OSError, ValueError) as exc:  # EPIPE, a closed stream, a full disk
            self._console = None
            _silence(console)
            notes.append(_note("log.console_dropped", error=repr(exc)))

    def _deliver(self, record: dict[str, Any]) -> None:
        """Hand `record` to the taps on the loop that owns them."""
        if not self._taps:
            return
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._run_taps(record)
            return
        # A closed loop raises RuntimeError: nobody follows any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._run_taps, record)

    def _run_taps(self, record: dict[str, Any]) -> None:
        for tap in self._taps:
            try:
                tap(record)
            except Exception as exc:  # a broken follower must not fail whoever logged
                note = _note("log.tap_failed", tap=repr(tap), error=repr(exc))
                with self._lock:
                    self._write_file(cap_record(note, self._record_limit)[1], [])

    def close(self) -> None:
        # A full disk fails the last flush too; the descriptor is closed all the same.
        with self._lock, contextlib.suppress(OSError, ValueError):
            if self._file is not None:
                self._file.close()


def _note(event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": utc_iso(), "level": "warning", "event": event, **fields}


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _silence(stream: IO[str]) -> None:
    """Point a dead console's descriptor at /dev/null.

    Whatever else writes there later (a traceback, the interpreter's flush at exit) would
    otherwise raise BrokenPipeError in its turn; nobody reads that pipe any more.
    """
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


_current: _Fanout | None = None


def configure(
    log_file: Path | None = None,
    *,
    console: IO[str] | None = sys.stderr,
    taps: list[Tap] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
    record_limit: int = RECORD_MAX_BYTES,
) -> None:
    """Install the pipeline. Called once by the daemon (and by the CLI with no file).

    Args:
        loop: the loop the taps belong to; by default the one running where this is called.
            Records logged on other threads reach the taps through it.
    """
    global _current  # noqa: PLW0603 - structlog's own configuration is process-global too
    if _current is not None:
        _current.close()
    _current = _Fanout(
        log_file,
        console,
        list(taps or []),
        loop=loop or _running_loop(),
        max_bytes=max_bytes,
        backups=backups,
        record_limit=record_limit,
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            _current,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def utc_iso(ts: float | None = None) -> str:
    """A wall-clock time (now by default) as ISO 8601 UTC with a Z, like every record's `ts`;
    the form the contract gives for every time in status and events."""
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def get_logger(**bound: Any) -> Logger:
    """A structlog logger; modules bind their component name."""
    return cast(Logger, structlog.get_logger(**bound))
