"""The control socket against hostile or broken surroundings: planted lock files, socket
directories and listeners of another user, a full listen queue, request ids that cannot be
echoed. Real sockets and, for another uid, real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devsupervisor import paths
from devsupervisor.control import protocol
from devsupervisor.control.client import Client
from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.control.server import ControlServer
from devsupervisor.errors import DaemonNotRunning, DevsupError, UntrustedSocket

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
PROJECT = "hard"


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private XDG_RUNTIME_DIR (AF_UNIX paths are limited to 107 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="dsh-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def socket_dir(runtime_dir: Path) -> Path:
    directory = paths.socket_dir()
    directory.mkdir(mode=0o700)
    return directory


class Recorder:
    """A command table that remembers every command it ran."""

    def __init__(self) -> None:
        self.ran: list[Request] = []

    async def __call__(self, req: Request) -> Any:
        self.ran.append(req)
        if req.cmd in ("status", "restart"):
            return {"ran": req.cmd}
        raise ProtocolError(protocol.UNKNOWN_COMMAND, f"unknown command {req.cmd!r}")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 15))


@contextlib.contextmanager
def listener(path: Path, backlog: int = 8) -> Iterator[socket.socket]:
    """A bare listening socket that never accepts."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(backlog)
    try:
        yield sock
    finally:
        sock.close()
        path.unlink(missing_ok=True)


# --- the lock file -----------------------------------------------------------------------------


def test_lock_file_symlink_is_not_followed(socket_dir: Path, tmp_path: Path) -> None:
    """A symlink planted at the lock path is refused; its target is neither truncated nor
    written."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    paths.lock_path(paths.socket_path(PROJECT)).symlink_to(target)
    with pytest.raises(DevsupError, match="symbolic link"):
        run(ControlServer(paths.socket_path(PROJECT), Recorder()).start())
    assert target.read_text() == "keep me\n"
    assert not paths.socket_path(PROJECT).exists()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_lock_path_that_is_not_a_regular_file_is_refused(socket_dir: Path, kind: str) -> None:
    """A FIFO (which could block the open) or a directory at the lock path is refused."""
    lock = paths.lock_path(paths.socket_path(PROJECT))
    if kind == "fifo":
        os.mkfifo(lock, 0o600)
    else:
        lock.mkdir()
    with pytest.raises(DevsupError, match=str(lock)):
        run(ControlServer(paths.socket_path(PROJECT), Recorder()).start())


def test_lock_file_of_another_user_is_refused(socket_dir: Path) -> None:
    """A lock file owned by someone else is not used."""
    if os.getuid() != 0:
        pytest.fail("needs root to give the lock file to another uid")
    lock = paths.lock_path(paths.socket_path(PROJECT))
    lock.write_text("")
    os.chown(lock, NOBODY, NOBODY)
    with pytest.raises(DevsupError, match="belongs to uid 65534"):
        run(ControlServer(paths.socket_path(PROJECT), Recorder()).start())


# --- what the client trusts ---------------------------------------------------------------------


def test_client_refuses_a_socket_directory_of_another_user(socket_dir: Path) -> None:
    """A socket directory another user owns is not used (exit 3), even with a socket in it."""
    if os.getuid() != 0:
        pytest.fail("needs root to give the directory to another uid")
    path = paths.socket_path(PROJECT)
    with listener(path):
        os.chown(socket_dir, NOBODY, NOBODY)
        with pytest.raises(UntrustedSocket, match="belongs to uid 65534") as caught:
            Client(path, timeout=2).call("status")
    assert caught.value.exit_code == 3


def test_client_refuses_a_directory_others_may_write(socket_dir: Path) -> None:
    """A socket directory writable by group or others is not used: the socket could be anyone's."""
    path = paths.socket_path(PROJECT)
    with listener(path):
        socket_dir.chmod(0o777)
        with pytest.raises(UntrustedSocket, match="writable by others"):
            Client(path, timeout=2).call("status")
        socket_dir.chmod(0o770)
        with pytest.raises(UntrustedSocket, match="writable by others"):
            Client(path, timeout=2).call("status")


def test_client_refuses_a_symlinked_socket_directory(runtime_dir: Path, tmp_path: Path) -> None:
    """A socket directory that is a symlink is not followed."""
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    paths.socket_dir().symlink_to(real)
    with pytest.raises(UntrustedSocket, match="not a directory"):
        Client(paths.socket_path(PROJECT), timeout=2).call("status")


def test_client_trusts_only_the_uids_it_is_given(socket_dir: Path) -> None:
    """The owner check follows `trusted_uids`: our own directory is refused without our uid."""

    async def scenario() -> None:
        server = ControlServer(paths.socket_path(PROJECT), Recorder())
        await server.start()
        try:
            client = Client(server.path, timeout=2, trusted_uids=frozenset({NOBODY}))
            with pytest.raises(UntrustedSocket, match=f"belongs to uid {os.getuid()}"):
                await asyncio.to_thread(client.call, "status")
            ours = Client(server.path, timeout=2)
            assert await asyncio.to_thread(ours.call, "status") == {"ran": "status"}
            ours.close()
        finally:
            await server.close()

    run(scenario())


# Binds as root in root's 0700 directory, then listens as `nobody`: the listener's credentials
# (what the client's SO_PEERCRED reads) are those of the listen() call.
LISTEN_AS_NOBODY = f"""
import os, socket, sys, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1])
os.setgroups([])
os.setresgid({NOBODY}, {NOBODY}, {NOBODY})
os.setresuid({NOBODY}, {NOBODY}, {NOBODY})
sock.listen(8)
print("listening", flush=True)
sys.stdin.read()
"""


def test_client_refuses_a_socket_served_by_another_user(socket_dir: Path) -> None:
    """A socket in our directory whose listener runs as another uid is refused (SO_PEERCRED)."""
    if os.getuid() != 0:
        pytest.fail("needs root to start a listener as another uid")
    path = paths.socket_path(PROJECT)
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTEN_AS_NOBODY, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening"
        with pytest.raises(UntrustedSocket, match=f"served by uid {NOBODY} \\(pid {proc.pid}\\)"):
            Client(path, timeout=2).call("status")
    finally:
        proc.communicate(input="")
    assert proc.returncode == 0


# --- a full listen queue ------------------------------------------------------------------------


def test_full_listen_queue_is_daemon_not_running(socket_dir: Path) -> None:
    """A daemon whose listen queue stays full gives exit 3 and a sentence, not a traceback."""
    path = paths.socket_path(PROJECT)
    waiting: list[socket.socket] = []
    with listener(path, backlog=0):
        try:
            while True:  # fill the queue: the kernel refuses with EAGAIN once it is full
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                waiting.append(sock)
                try:
                    sock.connect(str(path))
                except BlockingIOError:
                    break
            with pytest.raises(DaemonNotRunning, match="pending connections stayed full") as caught:
                Client(path, timeout=0.3).call("status")
            assert caught.value.exit_code == 3
        finally:
            for sock in waiting:
                sock.close()


# --- request ids that cannot be echoed ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_id", "reason"),
    [("1e400", "finite"), ("-1e400", "finite"), ('"\\ud800"', "surrogates")],
)
def test_unechoable_id_is_bad_request_and_nothing_runs(
    socket_dir: Path, raw_id: str, reason: str
) -> None:
    """An id that parses to infinity or a lone surrogate gets `bad_request` (id null) and the
    command does not run; the connection stays usable."""

    async def scenario() -> None:
        recorder = Recorder()
        server = ControlServer(paths.socket_path(PROJECT), recorder)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(server.path))
            line = f'{{"id": {raw_id}, "cmd": "restart", "args": {{"name": "platform"}}}}\n'
            writer.write(line.encode())
            reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert reply["id"] is None
            assert reply["ok"] is False
            assert reply["error"]["code"] == "bad_request"
            assert reason in reply["error"]["message"]
            writer.write(b'{"id": 2, "cmd": "status"}\n')
            assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
            writer.close()
            await writer.wait_closed()
            assert [req.cmd for req in recorder.ran] == ["status"]
        finally:
            await server.close()

    run(scenario())


def test_parse_request_rejects_unechoable_ids() -> None:
    """The protocol refuses non-finite numbers and lone surrogates as ids before dispatch."""
    for line in (b'{"id": 1e400, "cmd": "x"}', b'{"id": "\\udc80", "cmd": "x"}'):
        with pytest.raises(ProtocolError) as caught:
            protocol.parse_request(line)
        assert caught.value.code == protocol.BAD_REQUEST
        assert caught.value.request_id is None
    assert protocol.parse_request(b'{"id": 1.5e300, "cmd": "x"}').id == 1.5e300


# --- read timeouts ------------------------------------------------------------------------------


def test_events_without_follow_times_out_on_a_silent_daemon(socket_dir: Path) -> None:
    """A one-shot `events` read is bounded by the client's timeout (exit 3 with a sentence)."""
    path = paths.socket_path(PROJECT)
    with listener(path) as server:
        client = Client(path, timeout=0.3)
        expected = r"did not answer `events` within 0\.3 s"
        with pytest.raises(DaemonNotRunning, match=expected) as caught:
            client.call("events")
        assert caught.value.exit_code == 3
        server.close()


class Quiet:
    """Streams one event after a quiet spell longer than the client's timeout."""

    def __init__(self, quiet: asyncio.Event) -> None:
        self.quiet = quiet

    async def __call__(self, req: Request) -> Any:
        async def events() -> Any:
            await self.quiet.wait()
            yield {"event": "late"}

        return events()


def test_follow_stream_waits_through_quiet_spells(socket_dir: Path) -> None:
    """A follower is not cut off by the call timeout: an idle daemon is not a dead one."""

    async def scenario() -> None:
        quiet = asyncio.Event()
        server = ControlServer(paths.socket_path(PROJECT), Quiet(quiet))
        await server.start()
        try:
            stream = Client(server.path, timeout=0.1).stream("events", {"follow": True})
            first = asyncio.ensure_future(asyncio.to_thread(next, stream))
            await asyncio.sleep(0.4)  # the quiet spell itself is what is tested: 4x the timeout
            assert not first.done()
            quiet.set()
            assert await asyncio.wait_for(first, 5) == {"event": "late"}
            rest = asyncio.ensure_future(asyncio.to_thread(list, stream))
            assert await asyncio.wait_for(rest, 5) == []  # ended by the daemon: no error
        finally:
            await server.close()

    run(scenario())
