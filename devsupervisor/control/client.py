"""The CLI's end of the control socket: blocking, one request at a time, errors as exceptions.

Foreign errors stop here: a missing or refusing socket, a full listen queue or a daemon that
hangs up becomes DaemonNotRunning (exit 3), a `forbidden` reply or EACCES becomes PeerRefused,
any other error envelope becomes RemoteError.

The client trusts a socket only as far as the daemon's own checks go the other way: the socket
directory must belong to this user (or root) and be writable by nobody else (under the /tmp
fallback anyone could have made it), and the process listening must run as this user or root
(SO_PEERCRED); otherwise UntrustedSocket. Standard library only: the real-process peer test
runs this module as another user from a bare interpreter.
"""

from __future__ import annotations

# The C module: `socket` (its enum set-up and `selectors`) costs the CLI ~2.5 ms of start-up,
# and the plain socket object has all this client uses.
import _socket
import contextlib
import os
import stat
import time
from pathlib import Path

from devsupervisor.control import protocol
from devsupervisor.control.peer import peer_credentials
from devsupervisor.errors import DaemonNotRunning, PeerRefused, RemoteError, UntrustedSocket
from devsupervisor.paths import check_socket_path

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Any

# Every command but a waiting `switch` answers in well under a second; ten leaves room for a
# daemon busy starting a stack, and `devsup switch` passes None.
DEFAULT_TIMEOUT = 10.0
_START_HINT = "start it with `devsup run` or `devsup service install`"
_RECV_SIZE = 65536
# A full listen queue has no event to wait on: connect is retried at this pace until the timeout.
CONNECT_RETRY_FIRST = 0.005
CONNECT_RETRY_MAX = 0.1


class Client:
    """Talks to the daemon listening at `path`.

    Args:
        path: the control socket (`paths.socket_path(project)`).
        timeout: seconds to connect and to get each `call`'s reply; None waits for ever.
            A stream waits for ever between events (a follower may idle all day); it ends
            when the daemon ends it, and a daemon that dies meanwhile is DaemonNotRunning.
        trusted_uids: who may own the socket directory and serve the socket; default this
            user and root. A seam for tests that cannot switch uid.

    Raises (from every method):
        SocketPathTooLong: `path` cannot be used with AF_UNIX.
        DaemonNotRunning: no socket, a stale one, no answer in time, or the daemon hung up.
        PeerRefused: the daemon (or the socket's permissions) refuse this user.
        UntrustedSocket: the socket directory or the process serving the socket is not ours.
    """

    def __init__(
        self,
        path: Path,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        trusted_uids: frozenset[int] | None = None,
    ) -> None:
        self.path = check_socket_path(path)
        self.timeout = timeout
        self.trusted_uids = trusted_uids or frozenset({os.getuid(), 0})
        self._conn: _Connection | None = None
        self._streams: set[_Connection] = set()
        self._next_id = 1

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result.

        Raises:
            RemoteError: the daemon answered with an error envelope.
        """
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self._conn is None:
            self._conn = _Connection.open(self.path, self.timeout, self.trusted_uids)
        conn, request_id = self._conn, self._take_id()
        try:
            conn.send(protocol.request(request_id, cmd, args), deadline)
            while True:
                reply = conn.receive(deadline)
                if reply is None:
                    raise DaemonNotRunning(
                        f"the devsup daemon at {self.path} closed the connection before "
                        f"answering `{cmd}`"
                    )
                if _is_reply_to(reply, request_id):
                    return _result(reply)
        except TimeoutError:
            self.close()  # a late reply would confuse the next call on this connection
            waited = f"{self.timeout:g} s"
            raise DaemonNotRunning(
                f"the devsup daemon at {self.path} did not answer `{cmd}` within {waited}"
            ) from None
        except RemoteError:
            raise  # an answer like any other: the connection is still good
        except BaseException:
            self.close()
            raise

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Send a streaming request and yield its event payloads until the daemon ends the stream.

        Uses a connection of its own. Closing the iterator (or breaking out of the loop) hangs
        up, which ends the stream on the daemon's side; so does `close()` from another thread.

        Raises:
            RemoteError: the daemon refused the request (e.g. `bad_args`).
            DaemonNotRunning: the daemon went away without ending the stream (it died).
        """
        conn = _Connection.open(self.path, self.timeout, self.trusted_uids)
        self._streams.add(conn)
        request_id = self._take_id()
        try:
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            conn.send(protocol.request(request_id, cmd, args), deadline)
            while True:
                # No deadline: a follower waits for the next event as long as it takes.
                reply = conn.receive(None)
                if reply is None:
                    if conn.closed:
                        return  # close() from another thread: we hung up ourselves
                    # A daemon that ends a stream says so with a final reply (below).
                    raise DaemonNotRunning(
                        f"the devsup daemon at {self.path} went away in the middle of `{cmd}`"
                    )
                if reply.get("id") == request_id and isinstance(reply.get("event"), dict):
                    yield reply["event"]
                elif _is_reply_to(reply, request_id):
                    _result(reply)  # raises on an error envelope
                    return  # the daemon ended the stream, or the command did not stream
        except TimeoutError:
            raise DaemonNotRunning(
                f"the devsup daemon at {self.path} did not take `{cmd}` within {self.timeout:g} s"
            ) from None
        finally:
            self._streams.discard(conn)
            conn.close()

    def close(self) -> None:
        """Hang up every connection, including streams being read in other threads."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for conn in list(self._streams):
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _take_id(self) -> int:
        request_id, self._next_id = self._next_id, self._next_id + 1
        return request_id


def _is_reply_to(reply: dict[str, Any], request_id: int) -> bool:
    if "ok" not in reply:
        return False
    # An error with a null id answers whatever we sent: it came before the daemon could read
    # an id (refused peer, over-long line).
    return reply.get("id") == request_id or (reply.get("id") is None and not reply["ok"])


def _result(reply: dict[str, Any]) -> Any:
    if reply["ok"] is True:
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise RemoteError("bad_reply", f"malformed error reply: {reply!r}")
    code, message = str(error.get("code", "")), str(error.get("message", ""))
    if code == protocol.FORBIDDEN:
        raise PeerRefused(f"the devsup daemon refused this user: {message}")
    raise RemoteError(code, message)


class _Connection:
    """A connected socket that sends request envelopes and reads reply lines under a deadline."""

    def __init__(self, sock: _socket.socket, path: Path) -> None:
        self._sock = sock
        self._path = path
        self._buffer = bytearray()
        self.closed = False

    @classmethod
    def open(cls, path: Path, timeout: float | None, trusted_uids: frozenset[int]) -> _Connection:
        _check_directory(path, trusted_uids)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            _connect(sock, path, timeout)
        except FileNotFoundError:
            sock.close()
            raise DaemonNotRunning(
                f"no devsup daemon is running (no socket at {path}); {_START_HINT}"
            ) from None
        except ConnectionRefusedError:
            sock.close()
            raise DaemonNotRunning(
                f"no devsup daemon answers on {path} (stale socket); {_START_HINT}"
            ) from None
        except PermissionError:
            sock.close()
            raise PeerRefused(
                f"permission denied on {path}: the daemon belongs to another user"
            ) from None
        except TimeoutError:
            sock.close()
            raise DaemonNotRunning(
                f"the devsup daemon at {path} did not accept a connection within {timeout:g} s"
            ) from None
        except BlockingIOError:
            sock.close()
            raise DaemonNotRunning(
                f"the devsup daemon at {path} is not taking connections (its queue of "
                f"pending connections stayed full for {timeout:g} s); it may be hung"
            ) from None
        except BaseException:
            sock.close()
            raise
        try:
            _check_server(sock, path, trusted_uids)
        except BaseException:
            sock.close()
            raise
        return cls(sock, path)

    def send(self, envelope: dict[str, Any], deadline: float | None) -> None:
        self._sock.settimeout(_remaining(deadline))
        try:
            self._sock.sendall(protocol.encode(envelope))
        except (BrokenPipeError, ConnectionResetError):
            raise self._hung_up() from None

    def receive(self, deadline: float | None) -> dict[str, Any] | None:
        """The next reply envelope, or None when the daemon closed the connection."""
        while (newline := self._buffer.find(b"\n")) < 0:
            self._sock.settimeout(_remaining(deadline))
            try:
                chunk = self._sock.recv(_RECV_SIZE)
            except ConnectionResetError:
                raise self._hung_up() from None
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[: newline + 1])
        del self._buffer[: newline + 1]
        try:
            return protocol.decode(line)
        except ValueError as exc:
            raise RemoteError("bad_reply", f"unreadable reply from the daemon: {exc}") from None

    def close(self) -> None:
        self.closed = True
        # shutdown() first: it wakes a recv() blocked in another thread, close() alone does not.
        with contextlib.suppress(OSError):
            self._sock.shutdown(_socket.SHUT_RDWR)
        self._sock.close()

    def _hung_up(self) -> DaemonNotRunning:
        return DaemonNotRunning(f"the devsup daemon at {self._path} hung up")


def _connect(sock: _socket.socket, path: Path, timeout: float | None) -> None:
    """connect(), retried while the daemon's listen queue is full, up to `timeout`.

    Raises:
        BlockingIOError: the queue stayed full until the timeout.
        OSError: what connect() raises otherwise (FileNotFoundError, ConnectionRefusedError...).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = CONNECT_RETRY_FIRST
    while True:
        sock.settimeout(_remaining(deadline))
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            # EAGAIN: AF_UNIX's answer when the backlog is full and the socket has a timeout.
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise
        time.sleep(pause)  # nothing to wait on but time: see CONNECT_RETRY_FIRST
        pause = min(pause * 2, CONNECT_RETRY_MAX)


def _check_directory(path: Path, trusted_uids: frozenset[int]) -> None:
    """Refuse a socket directory that someone else owns or may write to.

    Raises:
        DaemonNotRunning: there is no such directory (so no socket either).
        UntrustedSocket: it is not a directory, or belongs to or is writable by someone else.
    """
    directory = path.parent
    try:
        info = directory.lstat()
    except FileNotFoundError:
        raise DaemonNotRunning(
            f"no devsup daemon is running (no socket at {path}); {_START_HINT}"
        ) from None
    except PermissionError:
        raise PeerRefused(
            f"permission denied on {directory}: the daemon belongs to another user"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedSocket(
            f"socket directory {directory} is not a directory (a symlink?); not using it"
        )
    if info.st_uid not in trusted_uids:
        raise UntrustedSocket(
            f"socket directory {directory} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); not using it: remove it, or set XDG_RUNTIME_DIR"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedSocket(
            f"socket directory {directory} is writable by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); not using it: `chmod 700 {directory}`"
        )


def _check_server(sock: _socket.socket, path: Path, trusted_uids: frozenset[int]) -> None:
    """Refuse a socket served by a process of another user (SO_PEERCRED of the listener).

    Raises:
        UntrustedSocket: the listening process runs as an untrusted uid.
    """
    pid, uid, _ = peer_credentials(sock)
    if uid not in trusted_uids:
        raise UntrustedSocket(
            f"the socket {path} is served by uid {uid} (pid {pid}), not by you "
            f"(uid {os.getuid()}) or root; not talking to it"
        )


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining
