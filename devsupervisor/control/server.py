"""The daemon's end of the control socket: accept, authenticate, frame, dispatch, reply.

What the commands do is not this module's business: every request goes to one `dispatch`
coroutine (the command table), which returns a JSON-able result, or an async iterator of event
payloads for a streaming command, or raises `ProtocolError`.

Per connection:
- The peer's uid (SO_PEERCRED) must be the daemon's or root; anyone else gets one `forbidden`
  error line and is disconnected.
- Requests are handled one at a time, in order; connections are independent tasks, so a slow
  command holds up only its own connection.
- A line over MAX_LINE is read through to its newline and discarded, answered `bad_request`, and
  the connection stays usable: a client bug costs one reply, not the connection.
- A streaming reply owns the connection until the iterator ends (the connection is then closed)
  or the client goes away (the iterator is then closed at once). Going away is seen as EOF, so a
  follower keeps its write side open; input sent during a stream is ignored.
- `close()` cancels whatever each connection is doing (a pending dispatch, a stream) and hangs up.

One daemon per socket: `start()` takes an exclusive `flock` on `<project>.lock` beside the socket
(released by the kernel even after `kill -9`), so two daemons starting at once cannot both decide
that the socket is stale. A socket that refuses connections is stale and is replaced; one that
answers belongs to a live daemon and `start()` raises AlreadyRunning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from devsupervisor.control import protocol
from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.errors import AlreadyRunning, DevsupError
from devsupervisor.paths import check_socket_path, lock_path

log = structlog.get_logger()

# A plain JSON-able result, or an async iterator of event payloads for a streaming command.
Reply = Any | AsyncIterator[dict[str, Any]]
Dispatch = Callable[[Request], Awaitable[Reply]]

# How long a live daemon may take to accept the probe connection before we call it wedged-but-live.
PROBE_TIMEOUT = 1.0
# Pending connections: 50 clients at once (issue 2) plus headroom.
BACKLOG = 128
# How long a refused peer gets to read its `forbidden` reply and hang up.
REFUSE_LINGER = 1.0
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


class ControlServer:
    """Serve `dispatch` on the AF_UNIX socket at `path`. Loop-only.

    Args:
        allowed_uids: peers allowed in; default the daemon's uid and root. A seam for tests
            that cannot switch uid; the daemon never passes it.

    Raises:
        SocketPathTooLong: `path` cannot be bound with AF_UNIX.
    """

    def __init__(
        self, path: Path, dispatch: Dispatch, *, allowed_uids: frozenset[int] | None = None
    ) -> None:
        self.path = check_socket_path(path)
        self._dispatch = dispatch
        self._allowed_uids = default_allowed_uids() if allowed_uids is None else allowed_uids
        self._server: asyncio.AbstractServer | None = None
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we bound
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def project(self) -> str:
        return self.path.stem

    async def start(self) -> None:
        """Create the 0700 directory, claim the socket, bind it 0600 and listen.

        Raises:
            AlreadyRunning: a live daemon holds this project's socket.
            DevsupError: the socket directory belongs to another user or is not a directory.
        """
        _ensure_private_dir(self.path.parent)
        self._lock_fd = self._claim_lock()
        try:
            await self._remove_stale_socket()
            sock = self._bind()
            self._server = await asyncio.start_unix_server(
                self._serve_connection, sock=sock, limit=protocol.MAX_LINE, backlog=BACKLOG
            )
        except BaseException:
            self._release_lock()
            raise
        log.info("control.listening", socket=str(self.path))

    async def close(self) -> None:
        """Stop listening, drop every connection (closing their streams), remove our socket."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._remove_own_socket()
        self._release_lock()
        log.info("control.closed", socket=str(self.path))

    # --- claiming the socket -------------------------------------------------------------

    def _claim_lock(self) -> int:
        path = lock_path(self.path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self._already_running(other)) from None
        # The pid is for the message a second daemon prints; the lock itself is the authority.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _release_lock(self) -> None:
        # The lock file stays: unlinking it would let a third daemon lock a different inode.
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _remove_stale_socket(self) -> None:
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

    def _bind(self) -> socket.socket:
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

    def _remove_own_socket(self) -> None:
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

    # --- serving a connection ------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:  # accepted just before close(): do not dispatch into a stopping daemon
            writer.close()
            return
        self._connections.add(task)
        try:
            pid, uid, _ = peer_credentials(writer.get_extra_info("socket"))
            if uid not in self._allowed_uids:
                log.warning("control.peer_refused", peer_pid=pid, peer_uid=uid, uid=os.getuid())
                message = f"uid {uid} may not use this daemon (it runs as uid {os.getuid()})"
                await _send(writer, protocol.error(None, protocol.FORBIDDEN, message))
                # Read what the peer sent before closing: closing an AF_UNIX socket with unread
                # input resets the peer, which could then miss the reason it was refused.
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_wait_for_eof(reader), REFUSE_LINGER)
                return
            await self._serve_requests(reader, writer)
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        except asyncio.CancelledError:
            # Python 3.11's start_unix_server calls task.exception() on this task when it ends,
            # which raises (and logs an error) for a cancelled task: end normally on close().
            if not self._closing:
                raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await _read_line(reader)
            except _LineTooLongError:
                log.warning("control.bad_request", reason="line too long")
                message = f"request line over {protocol.MAX_LINE} bytes"
                await _send(writer, protocol.error(None, protocol.BAD_REQUEST, message))
                continue
            if not line:
                return  # EOF
            if not line.strip():
                continue  # tolerate blank lines (e.g. a human typing into socat)
            try:
                req = protocol.parse_request(line)
            except ProtocolError as exc:
                log.warning("control.bad_request", reason=exc.message)
                await _send(writer, protocol.error(exc.request_id, exc.code, exc.message))
                continue
            reply = await self._call(req)
            if isinstance(reply, AsyncIterator):
                await self._stream(req, reply, reader, writer)
                return
            await _send_reply(writer, req, reply)

    async def _call(self, req: Request) -> Reply:
        """Run dispatch; its errors come back as a `_Failure` holding the error envelope."""
        try:
            return await self._dispatch(req)
        except ProtocolError as exc:
            return _Failure(protocol.error(req.id, exc.code, exc.message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("control.dispatch_failed", cmd=req.cmd, request_id=req.id)
            return _Failure(protocol.error(req.id, protocol.INTERNAL, _describe(exc)))

    async def _stream(
        self,
        req: Request,
        events: AsyncIterator[dict[str, Any]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        pump = asyncio.create_task(self._pump(req, events, writer))
        # Without this, a follower that disconnects during a quiet spell would hold its
        # subscription until the next event failed to write.
        hangup = asyncio.create_task(_wait_for_eof(reader))
        log.info("control.stream_started", cmd=req.cmd, request_id=req.id)
        try:
            await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, hangup):
                task.cancel()
            await asyncio.gather(pump, hangup, return_exceptions=True)
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            log.info("control.stream_ended", cmd=req.cmd, request_id=req.id)
        failure = None if pump.cancelled() else pump.exception()
        if failure is not None:
            raise failure  # a connection error: the caller treats it as the client leaving

    async def _pump(
        self, req: Request, events: AsyncIterator[dict[str, Any]], writer: asyncio.StreamWriter
    ) -> None:
        try:
            async for payload in events:
                # drain() waits while the client does not read; the subscription behind
                # `events` drops and marks meanwhile, so the daemon itself never waits.
                await _send(writer, protocol.event(req.id, payload))
        except ProtocolError as exc:
            await _send(writer, protocol.error(req.id, exc.code, exc.message))
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("control.stream_failed", cmd=req.cmd, request_id=req.id)
            await _send(writer, protocol.error(req.id, protocol.INTERNAL, _describe(exc)))


class _Failure:
    """An error envelope produced by `_call`, told apart from a result that happens to be a dict."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope


class _LineTooLongError(Exception):
    """A request line over MAX_LINE; it has been read through its newline and discarded."""


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    """The next line (b"" at EOF; a final line without newline is returned as is).

    Raises:
        _LineTooLongError: after discarding the whole over-long line.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError as exc:
        consumed = exc.consumed
    while True:
        await reader.readexactly(consumed)  # leaves the rest in the buffer; bounded by limit
        try:
            await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed
            continue
        except asyncio.IncompleteReadError:
            pass  # EOF in the middle of the long line: report it, the next read sees EOF
        raise _LineTooLongError


async def _wait_for_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(protocol.MAX_LINE):
        pass


async def _send(writer: asyncio.StreamWriter, envelope: dict[str, Any]) -> None:
    writer.write(protocol.encode(envelope))
    await writer.drain()


async def _send_reply(writer: asyncio.StreamWriter, req: Request, reply: Reply) -> None:
    if isinstance(reply, _Failure):
        await _send(writer, reply.envelope)
        return
    try:
        data = protocol.encode(protocol.ok(req.id, reply))
    except (TypeError, ValueError) as exc:
        log.error("control.unencodable_result", cmd=req.cmd, request_id=req.id, error=str(exc))
        data = protocol.encode(protocol.error(req.id, protocol.INTERNAL, _describe(exc)))
    writer.write(data)
    await writer.drain()


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ensure_private_dir(directory: Path) -> None:
    """Create `directory` 0700, or make an existing one of ours 0700; refuse anyone else's.

    /tmp/devsup-<uid> is a predictable name in a shared directory: another user could create it
    first and watch our socket, so ownership and type are checked, not assumed.
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


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
