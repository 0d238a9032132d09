"""Who is at the other end of a control connection, and who may drive the daemon."""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

_PEERCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected AF_UNIX socket.

    `sock` is a socket.socket or the asyncio.TransportSocket wrapping one (same getsockopt).
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def default_allowed_uids() -> frozenset[int]:
    """Only the daemon's own user and root may drive it (PRODUCT.md)."""
    return frozenset({os.getuid(), 0})
