"""A per-process NOTIFY_SOCKET (sd_notify(3)): how a platform with `ready: {notify: true}`
says it serves.

Each platform process gets its own datagram socket in devsup's runtime directory, so a message
on it can only be about that process. The kernel attaches the sender's credentials
(SO_PASSCRED / SCM_CREDENTIALS), and a message counts only when it comes from the process
itself or one of its descendants (a `run` string without `exec` makes the platform a child of
the shell devsup started): during an overlap swap the old process, or any stranger that finds
the path, cannot make the new one ready.

`READY=1` sets `ready`; the last `STATUS=` text is kept for `devsup status`. Other assignments
(`MAINPID=`, `STOPPING=1`, `WATCHDOG=1`, ...) are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import psutil

from devsupervisor.logs.pipeline import get_logger

log = get_logger()

# sd_notify messages are a few short lines; the kernel's datagram limit is far above this.
MAX_MESSAGE = 4096
# struct ucred: pid, uid, gid (three C ints).
UCRED = struct.Struct("3i")


class NotifySocket:
    """One platform process's NOTIFY_SOCKET; `watch(pid)` once the process exists."""

    def __init__(
        self, directory: Path, name: str, *, on_status: Callable[[str], None] = lambda s: None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / f"notify-{name}.sock"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(str(self.path))
        self.ready = asyncio.Event()
        self.status: str | None = None
        self._on_status = on_status
        self._pid: int | None = None
        self._refused: set[int] = set()

    def watch(self, pid: int) -> None:
        """Start reading, accepting messages from `pid` and its descendants.

        Messages sent before this call wait in the socket buffer, so a process that notifies
        the moment it starts is not missed.
        """
        self._pid = pid
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self._sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(UCRED.size))
            except OSError:  # drained (BlockingIOError), or closed
                return
            sender = _sender_pid(ancdata)
            if sender is None or not self._is_ours(sender):
                if (sender or 0) not in self._refused:  # once per sender: no log flood
                    self._refused.add(sender or 0)
                    log.warning("platform.notify_refused", sender=sender, expected=self._pid)
                continue
            self._handle(data.decode("utf-8", "replace"))

    def _is_ours(self, sender: int) -> bool:
        if sender == self._pid:
            return True
        try:
            return any(p.pid == self._pid for p in psutil.Process(sender).parents())
        except psutil.Error:
            return False  # gone already: its ancestry cannot be checked

    def _handle(self, message: str) -> None:
        for line in message.splitlines():
            key, _, value = line.partition("=")
            if key == "READY" and value == "1" and not self.ready.is_set():
                log.debug("platform.notify_ready", pid=self._pid)
                self.ready.set()
            elif key == "STATUS":
                self.status = value
                self._on_status(value)

    def close(self) -> None:
        """Stop reading and remove the socket file. Idempotent."""
        if self._sock.fileno() >= 0:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _sender_pid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = UCRED.unpack(data[: UCRED.size])
            return int(pid)
    return None
