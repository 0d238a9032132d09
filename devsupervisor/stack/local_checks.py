"""What the ssh tunnel checks on this machine: whether a local port can take a forward, and
whether a Docker API answers on the forwarded socket."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from pathlib import Path


def forward_spec(port: int) -> str:
    """An ssh `-L` spec that forwards 127.0.0.1:port here to the same port there."""
    return f"127.0.0.1:{port}:127.0.0.1:{port}"


def port_is_free(port: int) -> bool:
    """True when 127.0.0.1:port can be bound here right now (as ssh binds it)."""
    with socket.socket() as sock:
        # Like ssh: connections of a stopped listener lingering in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


async def engine_answers(path: Path, timeout: float = 5.0) -> bool:
    """True when a Docker API at the unix socket `path` answers `GET /_ping` with 200."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return status.startswith(b"HTTP/1.") and b" 200 " in status
