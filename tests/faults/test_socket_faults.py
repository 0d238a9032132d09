"""The control socket under abuse (issue 9's fault suite): 500 connections at once, slow-loris
clients, random bytes. The daemon keeps answering everyone else, and stops cleanly after."""

from __future__ import annotations

import asyncio
import json
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devsupervisor.control import protocol
from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.control.server import ControlServer
from tests.harness import DaemonProcess

pytestmark = pytest.mark.faults

CONNECTIONS = 500
LORIS = 100
# The codes a request that is not a valid command gets (PRODUCT.md, "Control socket").
REQUEST_ERRORS = {"bad_request", "unknown_command", "bad_args"}


def read_replies(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """One reply line from each socket, read all at once; fails after `timeout`."""
    pending = {sock: b"" for sock in socks}
    done: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(pending)} of {len(socks)} connections got no reply"
        readable, _, _ = select.select(list(pending), [], [], remaining)
        for sock in readable:
            chunk = sock.recv(65536)
            assert chunk, "the daemon hung up instead of answering"
            pending[sock] += chunk
            if pending[sock].endswith(b"\n"):
                done[sock] = pending.pop(sock)
    return done


def quick_status(daemon: DaemonProcess) -> float:
    """Seconds the real CLI takes for `devsup status` (which must succeed)."""
    started = time.monotonic()
    result = daemon.cli("status", timeout=30)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


@pytest.fixture
def running(daemon: DaemonProcess) -> DaemonProcess:
    daemon.start()
    daemon.wait_platform("running", timeout=60)
    return daemon


def test_five_hundred_connections_at_once(running: DaemonProcess) -> None:
    """500 open connections each get their status reply; the CLI still answers meanwhile; the
    daemon's descriptors go back to where they were."""
    assert running.proc is not None
    daemon_process = psutil.Process(running.proc.pid)
    fds_before = daemon_process.num_fds()
    socks: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.connect(str(running.socket))  # blocking: waits while the backlog is full
        for index, sock in enumerate(socks):
            sock.sendall(protocol.encode(protocol.request(index, "status")))
        replies = read_replies(socks, timeout=60)
        for index, sock in enumerate(socks):
            reply = json.loads(replies[sock])
            assert reply["id"] == index
            assert reply["ok"] is True
        assert quick_status(running) < 5
    finally:
        for sock in socks:
            sock.close()

    def settled() -> bool:
        return daemon_process.num_fds() <= fds_before + 5

    deadline = time.monotonic() + 10
    while not settled():
        assert time.monotonic() < deadline, f"fds {daemon_process.num_fds()} (was {fds_before})"
        time.sleep(0.05)


def test_slow_loris_clients_hold_up_nobody(running: DaemonProcess) -> None:
    """100 clients that send half a request (or nothing) and stall: everyone else is answered
    at once, and `devsup stop` still stops the daemon cleanly."""
    socks: list[socket.socket] = []
    try:
        for index in range(LORIS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.connect(str(running.socket))
            if index % 2:
                sock.sendall(b'{"id": 1, "cmd": "sta')  # and never the rest, nor a newline
        assert quick_status(running) < 2
        stop = running.cli("stop", timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert running.proc is not None
        assert running.proc.wait(timeout=30) == 0
    finally:
        for sock in socks:
            sock.close()


# --- random bytes -------------------------------------------------------------------------------


class Echo:
    """A command table with one command, `ping`."""

    async def __call__(self, req: Request) -> Any:
        if req.cmd == "ping":
            if req.args:
                raise ProtocolError(protocol.BAD_ARGS, "ping takes no args")
            return "pong"
        raise ProtocolError(protocol.UNKNOWN_COMMAND, f"unknown command {req.cmd!r}")


class ThreadedServer:
    """A ControlServer on an event loop of its own thread, for blocking clients."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, Echo())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ControlServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ControlServer]:
    runtime = Path(tempfile.mkdtemp(prefix="dsf-"))
    path = runtime / "devsup" / "fuzz.sock"
    try:
        with ThreadedServer(path) as server:
            yield server
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def exchange(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Send `data` then a `ping` on one connection; every reply up to the ping's."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data + b"\n" + protocol.encode(protocol.request("probe", "ping")))
        buffer = b""
        replies: list[dict[str, Any]] = []
        while not replies or replies[-1].get("id") != "probe":
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {replies}"
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            replies.extend(json.loads(line) for line in lines)
        return replies


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=2000) | st.text(max_size=300).map(str.encode))
def test_random_bytes_get_one_error_each_and_harm_nothing(
    echo_server: ControlServer, data: bytes
) -> None:
    """Any bytes: each line gets one reply (an error unless it was a valid request), the
    connection stays usable, and the next request on it is answered."""
    replies = exchange(echo_server.path, data)
    probe = replies.pop()
    assert probe == {"id": "probe", "ok": True, "result": "pong"}
    lines = [line for line in data.split(b"\n") if line.strip()]
    assert len(replies) == len(lines)
    for reply in replies:
        assert set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"})
        if not reply["ok"]:
            assert reply["error"]["code"] in REQUEST_ERRORS


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_id=st.none() | st.integers() | st.floats() | st.text(max_size=50),
    cmd=st.text(max_size=30),
    args=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=3),
)
def test_parsed_requests_can_always_be_answered(request_id: Any, cmd: str, args: Any) -> None:
    """Whatever a request holds, either it is refused up front or its reply can be encoded
    (so the server never runs a command it cannot answer)."""
    line = json.dumps({"id": request_id, "cmd": cmd, "args": args}).encode("utf-8", "surrogatepass")
    try:
        parsed = protocol.parse_request(line)
    except ProtocolError as exc:
        protocol.encode(protocol.error(exc.request_id, exc.code, exc.message))
        return
    protocol.encode(protocol.ok(parsed.id, None))
    protocol.encode(protocol.error(parsed.id, protocol.FAILED, "x"))
