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
- A streaming reply owns the connection until the iterator ends (a final `ok(id, null)` is sent
  and the connection closed) or the client goes away (the iterator is then closed at once).
  Going away is seen as EOF, so a follower keeps its write side open; input sent during a
  stream is ignored.
- `close()` cancels whatever each connection is doing (a pending dispatch, a stream: which gets
  its final `ok(id, null)` too) and hangs up. A client that sees EOF without that final line
  knows the daemon died.

One daemon per socket: `start()` claims the socket path through `claim.SocketClaim` (an exclusive
lock beside the socket, a stale socket replaced, a live daemon's refused with AlreadyRunning);
`close()` removes only the socket it bound. Peer identity is read in `peer`, lines are framed in
`line_io`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from devsupervisor.control import protocol
from devsupervisor.control.claim import SocketClaim, ensure_private_dir
from devsupervisor.control.line_io import LineTooLongError, read_line, send, wait_for_eof
from devsupervisor.control.peer import default_allowed_uids, peer_credentials
from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.paths import check_socket_path

log = structlog.get_logger()

# A plain JSON-able result, or an async iterator of event payloads for a streaming command.
Reply = Any | AsyncIterator[dict[str, Any]]
Dispatch = Callable[[Request], Awaitable[Reply]]

# Pending connections: 50 clients at once plus headroom.
BACKLOG = 128
# How long a refused peer gets to read its `forbidden` reply and hang up.
REFUSE_LINGER = 1.0


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
        self._claim = SocketClaim(self.path)
        self._server: asyncio.AbstractServer | None = None
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
        ensure_private_dir(self.path.parent)
        self._claim.lock()
        try:
            await self._claim.remove_stale_socket()
            sock = self._claim.bind()
            self._server = await asyncio.start_unix_server(
                self._serve_connection, sock=sock, limit=protocol.MAX_LINE, backlog=BACKLOG
            )
        except BaseException:
            self._claim.release_lock()
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
        self._claim.remove_own_socket()
        self._claim.release_lock()
        log.info("control.closed", socket=str(self.path))

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
                await send(writer, protocol.error(None, protocol.FORBIDDEN, message))
                # Read what the peer sent before closing: closing an AF_UNIX socket with unread
                # input resets the peer, which could then miss the reason it was refused.
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait_for_eof(reader), REFUSE_LINGER)
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
                line = await read_line(reader)
            except LineTooLongError:
                log.warning("control.bad_request", reason="line too long")
                message = f"request line over {protocol.MAX_LINE} bytes"
                await send(writer, protocol.error(None, protocol.BAD_REQUEST, message))
                continue
            if not line:
                return  # EOF
            if not line.strip():
                continue  # tolerate blank lines (e.g. a human typing into socat)
            try:
                req = protocol.parse_request(line)
            except ProtocolError as exc:
                log.warning("control.bad_request", reason=exc.message)
                await send(writer, protocol.error(exc.request_id, exc.code, exc.message))
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
        hangup = asyncio.create_task(wait_for_eof(reader))
        log.info("control.stream_started", cmd=req.cmd, request_id=req.id)
        try:
            await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if self._closing:
                # No drain: the transport sends it on its way out, and close() must not wait
                # on a follower that does not read.
                with contextlib.suppress(Exception):
                    writer.write(protocol.encode(protocol.ok(req.id, None)))
            raise
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
        if pump.done() and not pump.cancelled() and pump.result():
            await send(writer, protocol.ok(req.id, None))  # the stream ended on our side

    async def _pump(
        self, req: Request, events: AsyncIterator[dict[str, Any]], writer: asyncio.StreamWriter
    ) -> bool:
        """Send every payload; True when the iterator ended, False when an error was sent."""
        try:
            async for payload in events:
                # drain() waits while the client does not read; the subscription behind
                # `events` drops and marks meanwhile, so the daemon itself never waits.
                await send(writer, protocol.event(req.id, payload))
        except ProtocolError as exc:
            await send(writer, protocol.error(req.id, exc.code, exc.message))
            return False
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("control.stream_failed", cmd=req.cmd, request_id=req.id)
            await send(writer, protocol.error(req.id, protocol.INTERNAL, _describe(exc)))
            return False
        return True


class _Failure:
    """An error envelope produced by `_call`, told apart from a result that happens to be a dict."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope


async def _send_reply(writer: asyncio.StreamWriter, req: Request, reply: Reply) -> None:
    if isinstance(reply, _Failure):
        await send(writer, reply.envelope)
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
