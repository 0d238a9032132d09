"""Readiness checks for a host platform: an HTTP 2xx, a TCP accept, a log line, or READY=1 on
the process's NOTIFY_SOCKET (`notify_socket`).

Polls start very short and back off: a Go binary listens a few milliseconds after exec, and the
reload target is measured in tens of milliseconds, so a fixed 100 ms poll would cost most of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import psutil

from devsupervisor.config import ReadyCheck
from devsupervisor.errors import OperationFailed

POLL_FIRST = 0.002
POLL_MAX = 0.1
# One probe must not hang on a half-open server longer than this.
PROBE_TIMEOUT = 1.0


class NotReady(OperationFailed):
    """The platform did not become ready (timeout, or it exited first)."""


async def http_ok(url: str) -> bool:
    """One GET; True on a 2xx status line."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        fields = status.split()
        return len(fields) >= 2 and fields[1].startswith(b"2")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def tcp_ok(target: str) -> bool:
    host, _, port = target.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host or "127.0.0.1", int(port)), PROBE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class PortTaken(OperationFailed):
    """Another program accepts on the ready check's address before the platform starts."""


def probed_address(check: ReadyCheck | None) -> tuple[str, int] | None:
    """The host and port an http or tcp check connects to (None for log and notify)."""
    if check is None or check.kind not in ("http", "tcp"):
        return None
    if check.kind == "http":
        parts = urlsplit(check.target)
        return parts.hostname or "127.0.0.1", parts.port or 80
    host, _, port = check.target.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def stranger_on(check: ReadyCheck | None) -> str | None:
    """Who already accepts where an http/tcp check probes, before the platform starts, or None.

    Such a program would pass the check in the platform's place (READY=1 for a platform that
    could not even listen). Costs one refused connect in the usual case; only a port that
    accepts is looked up (psutil's socket table takes ~0.1 s).
    """
    address = probed_address(check)
    if address is None:
        return None
    host, port = address
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return None
    writer.close()
    holder = await asyncio.to_thread(_listener_of, port)
    return (
        f"{host}:{port} (the ready check's address) is already in use{holder}"
        " before the platform started"
    )


def _listener_of(port: int) -> str:
    """' by pid N (name)' of a process listening on `port`, when it can be told."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return " by another user's process"
                with contextlib.suppress(psutil.Error):
                    return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                return f" by pid {conn.pid}"
    return ""


class LogMatcher:
    """Remembers whether a platform output line matched the `log` readiness regex."""

    def __init__(self, pattern: str) -> None:
        self._regex = re.compile(pattern)
        self.matched = asyncio.Event()

    def feed(self, line: str) -> None:
        if not self.matched.is_set() and self._regex.search(line):
            self.matched.set()


async def wait_ready(
    check: ReadyCheck | None,
    *,
    is_alive: Callable[[], bool],
    log_matcher: LogMatcher | None = None,
    notified: asyncio.Event | None = None,
) -> None:
    """Return once the check passes.

    Args:
        log_matcher: what `log` checks read.
        notified: set on READY=1, what `notify` checks read.

    Raises:
        NotReady: the timeout passed, or the process exited first.
    """
    if check is None:
        return
    deadline = time.monotonic() + check.timeout
    delay = POLL_FIRST
    # Checks that are an event are woken by it at once; the poll then only notices an exit.
    event = (
        notified
        if check.kind == "notify"
        else log_matcher.matched
        if check.kind == "log" and log_matcher is not None
        else None
    )
    while True:
        if check.kind == "http":
            ok = await http_ok(check.target)
        elif check.kind == "tcp":
            ok = await tcp_ok(check.target)
        else:
            ok = event is not None and event.is_set()
        if ok:
            return
        if not is_alive():
            raise NotReady("platform exited before it was ready")
        if time.monotonic() >= deadline:
            what = f"{check.kind} {check.target}".strip()
            raise NotReady(f"not ready after {check.timeout:g}s ({what})")
        if event is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), delay)
        else:
            await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX)
