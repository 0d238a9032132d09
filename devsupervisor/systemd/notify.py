"""The systemd notify protocol (sd_notify), spoken directly on `$NOTIFY_SOCKET`.

One datagram per message, `KEY=value` lines, to an AF_UNIX SOCK_DGRAM socket whose address is a
filesystem path or, when it starts with `@`, an abstract name. No libsystemd: the protocol is a
few lines and the daemon must run the same way with and without systemd.

Sending never raises into the daemon: a failure is logged once (`notify.failed`) and reported by
the return value. With no `NOTIFY_SOCKET` every call is a silent no-op.

The watchdog pinger runs *on* the event loop (a coroutine, not a thread): when the loop wedges,
the pings stop and systemd restarts the service, which is the point of `WatchdogSec=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import MutableMapping

import structlog

log = structlog.get_logger(__name__)

# The variables systemd hands a Type=notify service; removed from the environment by `from_env`
# so that children (go build, the platform, docker compose) do not talk to devsup's socket.
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# A full receive queue on systemd's side blocks the sender; bound that so a notify call can delay
# the event loop by at most this long instead of wedging it (which would trip the watchdog).
SEND_TIMEOUT = 0.25

# STATUS= is one line shown by `systemctl status`; a newline would start a new assignment.
STATUS_MAX_CHARS = 200


def parse_watchdog_interval(
    environ: MutableMapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """The watchdog interval in seconds that systemd asks this process to honour, or None.

    None when `WATCHDOG_USEC` is unset, malformed or zero, or when `WATCHDOG_PID` names another
    process (the variables were inherited from a parent that is the real service).
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            if int(raw_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def _socket_address(notify_socket: str) -> str:
    # `@name` is systemd's spelling of an abstract socket; Python spells it with a leading NUL.
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    return notify_socket


class Notifier:
    """Sends sd_notify messages to one notify socket; a no-op when `address` is None.

    Args:
        address: the `NOTIFY_SOCKET` value (`/path` or `@abstract`), or None to disable.
        watchdog_interval: seconds from `WATCHDOG_USEC`, or None when no watchdog is asked for.
    """

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        self._address = address
        self._watchdog_interval = watchdog_interval
        self._sock: socket.socket | None = None
        self._failure_logged = False

    @classmethod
    def from_env(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """The notifier systemd set up for this process (disabled when `NOTIFY_SOCKET` is unset).

        Args:
            environ: where to read the variables; `os.environ` by default.
            unset: remove the notify variables afterwards so child processes do not inherit them.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        interval = parse_watchdog_interval(env)
        if unset:
            for name in NOTIFY_ENV:
                env.pop(name, None)
        return cls(address, watchdog_interval=interval)

    @property
    def is_enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd expects a `WATCHDOG=1`, or None when it expects none."""
        return self._watchdog_interval if self.is_enabled else None

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (the stack and the platform are up)."""
        return self.send("READY=1", *(() if status is None else (_status_line(status),)))

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status` shows."""
        return self.send(_status_line(text))

    def watchdog(self) -> bool:
        """Ping the watchdog: the event loop is alive."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Tell systemd the daemon is shutting down."""
        return self.send("STOPPING=1", *(() if status is None else (_status_line(status),)))

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments as one datagram. True when it was delivered."""
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto(payload, _socket_address(self._address))
        except (OSError, ValueError) as exc:
            # Once: a missing socket fails every ping, and the log must not fill with them.
            if not self._failure_logged:
                self._failure_logged = True
                log.warning("notify.failed", socket=self._address, error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _status_line(text: str) -> str:
    return "STATUS=" + " ".join(text.split())[:STATUS_MAX_CHARS]


async def run_watchdog(
    notifier: Notifier, stop: asyncio.Event, *, interval: float | None = None
) -> None:
    """Ping `WATCHDOG=1` every half interval until `stop` is set.

    Runs as a task on the daemon's event loop, so a blocked loop stops pinging. Returns at once
    when no watchdog is asked for.

    Args:
        notifier: where to send the pings.
        stop: the daemon's stop event.
        interval: the watchdog interval in seconds; `notifier.watchdog_interval()` by default.
    """
    period_source = notifier.watchdog_interval() if interval is None else interval
    if period_source is None or not notifier.is_enabled:
        return
    # Half the interval, as sd_watchdog_enabled(3) advises: one late ping is not yet a timeout.
    period = period_source / 2
    log.debug("notify.watchdog_started", period=period)
    while not stop.is_set():
        notifier.watchdog()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
