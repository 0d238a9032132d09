"""The dashboard's listening socket, bound without loading the HTTP server (aiohttp costs
~15 MB and ~0.2 s to import: it is loaded when the page is first opened, see `attach`)."""

from __future__ import annotations

import socket

# Loopback only: the dashboard is for the person at this machine.
HOST = "127.0.0.1"
# Connections that wait while the server loads on the first visit.
BACKLOG = 128


def bind(port: int) -> socket.socket:
    """A listening TCP socket on HOST:`port` (0: a free port).

    Raises:
        OSError: the port cannot be bound.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
