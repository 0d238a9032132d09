"""Who is at the other end of a control connection, and who may drive the daemon."""

from __future__ import annotations

# The C module: `socket` (its enum set-up and `selectors`) costs the CLI ~2.5 ms of start-up.
import _socket
import os

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# struct ucred {pid_t pid; uid_t uid; gid_t gid;}: three native 4-byte integers.
_PEERCRED_SIZE = 12


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected AF_UNIX socket.

    `sock` is a socket.socket or the asyncio.TransportSocket wrapping one (same getsockopt).
    """
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED_SIZE)
    pid, uid, gid = memoryview(raw).cast("I").tolist()
    return pid, uid, gid


def default_allowed_uids() -> frozenset[int]:
    """Only the daemon's own user and root may drive it (the contract)."""
    return frozenset({os.getuid(), 0})
