"""The platform's listening sockets (`platform.binary.listen`), bound and held by devsup.

devsup binds each address once, before the first platform start, and keeps the socket open for
its whole life; every platform process inherits them as fds 3, 4, ... (sd_listen_fds(3)). So
while one process stops and the next starts, connections wait in the kernel's listen backlog
instead of being refused, and during an overlap swap both processes accept from the same socket.

devsup never accepts on them and leaves them blocking: O_NONBLOCK lives on the open file
description shared with the child, and a child reading the sd_listen_fds convention expects the
socket as a plain listening socket.

`LISTEN_FDNAMES` (colon-separated, so a name holds no colon) names each fd after its address:
`127.0.0.1-8080` for `127.0.0.1:8080`, the path for `unix:PATH`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from devsupervisor.errors import OperationFailed
from devsupervisor.logs.pipeline import get_logger

log = get_logger()

# Connections a stop-then-start swap can queue while no process accepts: a steady client makes
# a few hundred a second and a swap takes tens of milliseconds; the kernel caps it at somaxconn.
BACKLOG = 1024
UNIX_PREFIX = "unix:"
# Where the error names the address, so the message points at the config key.
CONFIG_KEY = "platform.binary.listen"


class ListenError(OperationFailed):
    """A `listen` address could not be bound (taken by another process, bad address, ...)."""


@dataclass(frozen=True)
class Address:
    """One `listen` entry, parsed: a TCP host and port, or a unix socket path."""

    text: str
    family: socket.AddressFamily
    sockaddr: tuple[str, int] | str

    @property
    def fdname(self) -> str:
        text = self.sockaddr if isinstance(self.sockaddr, str) else self.text
        return text.replace("[", "").replace("]", "").replace(":", "-")


def parse_address(text: str) -> Address:
    """`HOST:PORT`, `[V6]:PORT` or `unix:PATH`.

    Raises:
        ListenError: the text is neither.
    """
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :]
        if not path:
            raise ListenError(f"{CONFIG_KEY}: {text}: empty unix socket path")
        return Address(text, socket.AF_UNIX, path)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ListenError(f"{CONFIG_KEY}: {text}: expected HOST:PORT or unix:PATH")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return Address(text, family, (host, int(port)))


def _bind(address: Address, backlog: int) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family != socket.AF_UNIX:
            # A previous devsup's connections in TIME_WAIT must not block the bind; another
            # process listening still does (no SO_REUSEPORT), which is the error we want.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            _remove_stale_unix(address)
        sock.bind(address.sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(_bind_error(address, exc)) from exc
    return sock


def _bind_error(address: Address, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{CONFIG_KEY}: {address.text} is already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{CONFIG_KEY}: {address.text}: no such local address"
    return f"{CONFIG_KEY}: {address.text}: {exc.strerror or exc}"


def _remove_stale_unix(address: Address) -> None:
    """A socket file left by an earlier (killed) devsup is removed when nobody listens on it;
    a live one, or a file that is not a socket, is left alone (the bind then reports it)."""
    path = str(address.sockaddr)
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError:
            return


class Listeners:
    """The bound sockets, in config order; shared by every platform process of the daemon."""

    def __init__(self, addresses: Iterable[str] = (), *, backlog: int = BACKLOG) -> None:
        """Bind every address now.

        Raises:
            ListenError: one could not be bound; none stays bound.
        """
        self._backlog = backlog
        self._bound: dict[str, tuple[Address, socket.socket]] = {}
        self.update(addresses)

    def __bool__(self) -> bool:
        return bool(self._bound)

    @property
    def addresses(self) -> list[str]:
        return list(self._bound)

    def fds(self) -> list[int]:
        """The socket fds, in config order: a child gets them as 3, 4, ..."""
        return [sock.fileno() for _, sock in self._bound.values()]

    def env(self) -> dict[str, str]:
        """LISTEN_FDS and LISTEN_FDNAMES (LISTEN_PID is set in the child, see `shell`)."""
        if not self._bound:
            return {}
        names = [address.fdname for address, _ in self._bound.values()]
        return {"LISTEN_FDS": str(len(names)), "LISTEN_FDNAMES": ":".join(names)}

    def update(self, addresses: Iterable[str]) -> bool:
        """Hold exactly `addresses`: bind the new ones, close those no longer listed, keep the
        rest (same socket, so its queued connections survive). Returns whether anything changed.

        Raises:
            ListenError: a new address could not be bound; the held set is then unchanged.
        """
        wanted = list(dict.fromkeys(addresses))
        fresh: dict[str, tuple[Address, socket.socket]] = {}
        try:
            for text in wanted:
                if text not in self._bound:
                    address = parse_address(text)
                    fresh[text] = (address, _bind(address, self._backlog))
        except ListenError:
            self._close(fresh.values())
            raise
        dropped = [self._bound[t] for t in self._bound if t not in wanted]
        reordered = list(self._bound) != [t for t in wanted if t in self._bound]
        self._bound = {t: self._bound.get(t) or fresh[t] for t in wanted}
        self._close(dropped)
        for text in fresh:
            log.info("platform.listen.bound", address=text)
        for address, _ in dropped:
            log.info("platform.listen.closed", address=address.text)
        return bool(fresh or dropped or reordered)

    def close(self) -> None:
        """Close every socket (the daemon stops); unix socket files are removed."""
        self._close(self._bound.values())
        self._bound = {}

    @staticmethod
    def _close(entries: Iterable[tuple[Address, socket.socket]]) -> None:
        for address, sock in list(entries):
            sock.close()
            if isinstance(address.sockaddr, str):
                with contextlib.suppress(OSError):
                    os.unlink(address.sockaddr)
