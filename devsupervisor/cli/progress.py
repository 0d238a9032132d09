"""Progress for long CLI operations (`switch`, `rebuild`): what the daemon does, as it does it.

While the request runs, a second connection follows the daemon's events and prints, escaped
(`terminal`), the ones that tell progress (services starting, builds, the platform coming up)
and happened since the request began: a follow stream starts with recent events, so those from
before are skipped and those between the request and the subscription are kept. The reply can
overtake the last events on the follow stream, so at the end the recent events are read once
more and the ones not printed yet are. On a TTY a live status line shows the elapsed time;
elsewhere (CI logs, pipes) only plain lines are printed.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from devsupervisor.cli.terminal import escape
from devsupervisor.control.client import Client
from devsupervisor.errors import DevsupError

# Events worth a line while someone waits on a switch or a rebuild.
SHOWN = (
    "stack.removing",
    "stack.starting",
    "stack.failed",
    "build.started",
    "build.succeeded",
    "build.failed",
    "platform.started",
    "platform.ready",
    "service.",
)
# How often the TTY status line's clock ticks.
TICK = 0.1
# How long the final catch-up read of recent events may take.
CATCH_UP_TIMEOUT = 2.0


def happened_before(event: dict[str, Any], moment: float) -> bool:
    """Whether the event's `ts` (ISO 8601 UTC) is before `moment` (a time.time() value);
    False when it has no readable `ts`, so such an event is shown rather than lost."""
    try:
        return datetime.fromisoformat(str(event["ts"])).timestamp() < moment
    except (KeyError, ValueError):
        return False


def describe(event: dict[str, Any]) -> str:
    name = str(event.get("event", ""))
    details = []
    for key in ("stack", "services", "trigger", "duration", "pid", "container", "reason"):
        value = event.get(key)
        if value not in (None, [], ""):
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value[:5])
            if key == "container" and isinstance(value, str):
                value = value[:12]
            details.append(f"{key}={value}")
    return f"{name} {' '.join(details)}".rstrip()


class Progress:
    def __init__(self, socket: Path, title: str, out: TextIO = sys.stdout) -> None:
        self._socket = socket
        self._title = title
        self._out = out
        self._tty = out.isatty()
        self._started = time.monotonic()
        self._since = time.time()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._threads: list[threading.Thread] = []
        self._printed: set[str] = set()

    def __enter__(self) -> Progress:
        self._since = time.time()  # the request is sent after this: earlier events are history
        self._client = Client(self._socket, timeout=None)
        self._threads.append(threading.Thread(target=self._follow, daemon=True))
        if self._tty:
            self._threads.append(threading.Thread(target=self._tick, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.close()  # unblocks the follower's read
        for thread in self._threads:
            thread.join(timeout=2)
        if exc_type is None or issubclass(exc_type, DevsupError):  # not on Ctrl-C
            self._catch_up()
        if self._tty:
            self._write("\r\x1b[K")

    def _catch_up(self) -> None:
        """Print the events of the request the follow stream had not delivered yet."""
        with (
            contextlib.suppress(DevsupError, OSError, ValueError),
            Client(self._socket, timeout=CATCH_UP_TIMEOUT) as client,
        ):
            recent = client.call("events")
            if isinstance(recent, list):
                self._show(event for event in recent if isinstance(event, dict))

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._started:5.1f}s"

    def _write(self, text: str) -> None:
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def _follow(self) -> None:
        assert self._client is not None
        with contextlib.suppress(DevsupError, OSError, ValueError):
            self._show(self._client.stream("events", {"follow": True}), self._stop)

    def _show(self, events: Iterable[dict[str, Any]], stop: threading.Event | None = None) -> None:
        for event in events:
            if stop is not None and stop.is_set():
                return
            if happened_before(event, self._since):
                continue
            if not str(event.get("event", "")).startswith(SHOWN):
                continue
            key = json.dumps(event, sort_keys=True, default=str)
            with self._lock:
                if key in self._printed:
                    continue
                self._printed.add(key)
            prefix = "\r\x1b[K" if self._tty else ""
            self._write(f"{prefix}[{self._elapsed()}] {escape(describe(event))}\n")

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            self._write(f"\r\x1b[K{self._title} {self._elapsed()}")
