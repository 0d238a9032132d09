"""Where devsup keeps its socket, state and log files (the contract, "Control socket" and "Files").

The environment is read at call time, not import time, so tests (and a daemon started with a
different environment) see the values in force when they ask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from devsupervisor.errors import SocketPathTooLong

# sun_path is 108 bytes on Linux and the kernel needs room for the terminating NUL.
SUN_PATH_MAX = 107

SOCKET_SUFFIX = ".sock"


def _absolute_env(name: str) -> Path | None:
    """An XDG variable's value, or None when unset, empty or relative (the spec says ignore it)."""
    value = os.environ.get(name, "")
    if not value or not os.path.isabs(value):
        return None
    return Path(value)


def socket_dir() -> Path:
    """The directory holding every project's control socket (created 0700 by the server)."""
    runtime = _absolute_env("XDG_RUNTIME_DIR")
    if runtime is not None:
        return runtime / "devsup"
    return Path(f"/tmp/devsup-{os.getuid()}")


def check_socket_path(path: Path) -> Path:
    """Return `path` if AF_UNIX can bind it.

    Raises:
        SocketPathTooLong: the encoded path exceeds SUN_PATH_MAX bytes.
    """
    length = len(os.fsencode(path))
    if length > SUN_PATH_MAX:
        raise SocketPathTooLong(
            f"control socket path {path} is {length} bytes, over the {SUN_PATH_MAX}-byte "
            f"AF_UNIX limit; set a shorter XDG_RUNTIME_DIR (e.g. /run/user/{os.getuid()})"
        )
    return path


def socket_path(project: str) -> Path:
    """The control socket of `project`.

    Raises:
        SocketPathTooLong: see `check_socket_path`.
    """
    return check_socket_path(socket_dir() / f"{project}{SOCKET_SUFFIX}")


def lock_path(socket: Path) -> Path:
    """The lock file that makes one daemon per socket race-free (see `control.claim`)."""
    return socket.with_suffix(".lock")


def find_only_socket() -> Path | None:
    """The socket in the socket directory when there is exactly one, else None.

    Lets `devsup status` find the daemon with no config and no `--project`.
    """
    try:
        candidates = sorted(socket_dir().glob(f"*{SOCKET_SUFFIX}"))
    except OSError:
        return None
    sockets = [path for path in candidates if _is_socket(path)]
    return sockets[0] if len(sockets) == 1 else None


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False


def state_dir() -> Path:
    """Where the state and log files live: `$XDG_STATE_HOME/devsup`, default ~/.local/state."""
    state_home = _absolute_env("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return state_home / "devsup"


def state_file(project: str) -> Path:
    """The chosen stack and the platform's pid and start time survive a daemon restart here."""
    return state_dir() / f"{project}.json"


def log_file(project: str) -> Path:
    """The daemon's JSON-lines log."""
    return state_dir() / f"{project}.log"
