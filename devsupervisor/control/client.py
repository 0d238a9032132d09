"""The CLI's end of the control socket: blocking, one request at a time, errors as exceptions.

Foreign errors stop here: a missing or refusing socket becomes DaemonNotRunning (exit 3), a
`forbidden` reply or EACCES becomes PeerRefused, any other error envelope becomes RemoteError.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from devsupervisor.control import protocol
from devsupervisor.errors import DaemonNotRunning, PeerRefused, RemoteError
from devsupervisor.paths import check_socket_path

# Every command but a waiting `switch` answers in well under a second; ten leaves room for a
# daemon busy starting a stack, and `devsup switch` passes None.
DEFAULT_TIMEOUT = 10.0
_START_HINT = "start it with `devsup run` or `devsup service install`"
_RECV_SIZE = 65536


class Client:
    """Talks to the daemon listening at `path`.

    Args:
        path: the control socket (`paths.socket_path(project)`).
        timeout: seconds to connect and to get each `call`'s reply; None waits for ever.
            Streams wait for ever once connected.

    Raises (from every method):
        SocketPathTooLong: `path` cannot be used with AF_UNIX.
        DaemonNotRunning: no socket, a stale one, no answer in time, or the daemon hung up.
        PeerRefused: the daemon (or the socket's permissions) refuse this user.
    """

    def __init__(self, path: Path, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = check_socket_path(path)
        self.timeout = timeout
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
            self._conn = _Connection.open(self.path, self.timeout)
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
        up, which ends the stream on the daemon's side.

        Raises:
            RemoteError: the daemon refused the request (e.g. `bad_args`).
        """
        conn = _Connection.open(self.path, self.timeout)
        self._streams.add(conn)
        request_id = self._take_id()
        try:
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            conn.send(protocol.request(request_id, cmd, args), deadline)
            while True:
                reply = conn.receive(None)
                if reply is None:
                    return  # the daemon ended the stream (it is stopping)
                if reply.get("id") == request_id and isinstance(reply.get("event"), dict):
                    yield reply["event"]
                elif _is_reply_to(reply, request_id):
                    _result(reply)  # raises on an error envelope
                    return  # a plain result: the command did not stream
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

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self._path = path
        self._buffer = bytearray()

    @classmethod
    def open(cls, path: Path, timeout: float | None) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
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
        # shutdown() first: it wakes a recv() blocked in another thread, close() alone does not.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _hung_up(self) -> DaemonNotRunning:
        return DaemonNotRunning(f"the devsup daemon at {self._path} hung up")


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining
