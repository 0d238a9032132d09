"""Claiming a project's control socket path: one daemon per socket, and only ever our own file.

One daemon per socket: `SocketClaim.lock()` takes an exclusive `flock` on `<project>.lock` beside
the socket (released by the kernel even after `kill -9`), so two daemons starting at once cannot
both decide that the socket is stale. A socket that refuses connections is stale and is replaced;
one that answers belongs to a live daemon and AlreadyRunning is raised. On the way out only the
socket this claim bound is removed, and the lock file stays.

The socket directory is created 0700 by `ensure_private_dir`, which refuses one that belongs to
someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

import structlog

from devsupervisor.control.peer import peer_credentials
from devsupervisor.errors import AlreadyRunning, DevsupError
from devsupervisor.paths import lock_path

log = structlog.get_logger()

# How long a live daemon may take to accept the probe connection before we call it wedged-but-live.
PROBE_TIMEOUT = 1.0


class SocketClaim:
    """This daemon's hold on the socket at `path`: the lock beside it, then the socket it bound.

    The caller runs the steps in order (`lock`, `remove_stale_socket`, `bind`) and undoes them
    with `remove_own_socket` and `release_lock`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we bound

    @property
    def project(self) -> str:
        return self.path.stem

    def lock(self) -> None:
        """Take the exclusive lock beside the socket and write our pid into it.

        Raises:
            AlreadyRunning: another daemon holds the lock.
            DevsupError: the lock file is a symlink, not a regular file, or not ours.
        """
        fd = open_lock_file(lock_path(self.path))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self._already_running(other)) from None
        # The pid is for the message a second daemon prints; the lock itself is the authority.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release_lock(self) -> None:
        """Let go of the lock (a no-op when not held)."""
        # The lock file stays: unlinking it would let a third daemon lock a different inode.
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def remove_stale_socket(self) -> None:
        """Remove a socket left behind by a dead daemon; call with the lock held.

        Raises:
            AlreadyRunning: something answers (or is too slow to refuse) on the socket.
            DevsupError: the path exists and is not a socket.
        """
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise DevsupError(f"{self.path} exists and is not a socket; remove it and retry")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path)), PROBE_TIMEOUT
            )
        except ConnectionRefusedError:
            self.path.unlink(missing_ok=True)
            log.info("control.stale_socket_removed", socket=str(self.path))
            return
        except TimeoutError:
            raise AlreadyRunning(self._already_running(None)) from None
        # Something answers although we hold the lock: a daemon that predates the lock file.
        pid = peer_credentials(writer.get_extra_info("socket"))[0]
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        raise AlreadyRunning(self._already_running(pid))

    def bind(self) -> socket.socket:
        """Bind a new non-blocking socket at `path`, mode 0600, and remember which file it is.

        Raises:
            AlreadyRunning: the path was taken meanwhile.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # bind() fails with EADDRINUSE rather than replacing a file: no silent takeover.
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            info = self.path.lstat()
            self._inode = (info.st_dev, info.st_ino)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AlreadyRunning(self._already_running(None)) from None
            raise
        sock.setblocking(False)
        return sock

    def remove_own_socket(self) -> None:
        """Unlink the socket `bind` made, unless it is gone or another file took its place."""
        inode, self._inode = self._inode, None
        if inode is None:
            return
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        # Someone may have replaced it (a daemon started after ours was thought dead): leave theirs.
        if (info.st_dev, info.st_ino) == inode:
            self.path.unlink(missing_ok=True)

    def _already_running(self, pid: int | None) -> str:
        who = f"pid {pid}" if pid else "another daemon"
        return (
            f"devsup is already running for project {self.project!r} ({who}, socket {self.path}); "
            "use `devsup stop` to stop it"
        )


def ensure_private_dir(directory: Path) -> None:
    """Create `directory` 0700, or make an existing one of ours 0700; refuse anyone else's.

    /tmp/devsup-<uid> is a predictable name in a shared directory: another user could create it
    first and watch our socket, so ownership and type are checked, not assumed.

    Raises:
        DevsupError: `directory` is not a directory or belongs to another user.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise DevsupError(f"socket directory {directory} is not a directory; remove it and retry")
    if info.st_uid != os.getuid():
        raise DevsupError(
            f"socket directory {directory} belongs to uid {info.st_uid}, not {os.getuid()}; "
            "remove it or set XDG_RUNTIME_DIR"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        log.warning(
            "control.socket_dir_permissions_fixed",
            directory=str(directory),
            mode=oct(stat.S_IMODE(info.st_mode)),
        )
        os.chmod(directory, 0o700)


def open_lock_file(path: Path) -> int:
    """Open (or create, 0600) the lock file, refusing anything but our own regular file.

    We truncate and write it, so whatever it points at would be clobbered: a symlink planted
    in the directory is not followed (O_NOFOLLOW), a FIFO or device is not used (O_NONBLOCK
    keeps a FIFO from blocking the open; the fstat check then refuses it).

    Raises:
        DevsupError: the path is a symlink, not a regular file, or another user's file.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DevsupError(
                f"lock file {path} is a symbolic link; not following it (remove it and retry)"
            ) from None
        raise DevsupError(f"cannot open lock file {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_uid != os.getuid():
        problem = f"belongs to uid {info.st_uid}, not {os.getuid()}"
    if problem is not None:
        os.close(fd)
        raise DevsupError(f"lock file {path} {problem}; remove it and retry")
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
