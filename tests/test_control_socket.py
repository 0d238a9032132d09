"""The control socket end to end: paths, permissions, peer uid, framing, errors, streams.

Real AF_UNIX sockets throughout; the other-uid peer and the second daemon are real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from devsupervisor import paths
from devsupervisor.control import protocol
from devsupervisor.control.client import Client
from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.control.server import ControlServer
from devsupervisor.errors import (
    AlreadyRunning,
    DaemonNotRunning,
    DevsupError,
    RemoteError,
    SocketPathTooLong,
)
from devsupervisor.logs.broadcast import Broadcaster, Subscription, drop_marker

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
PROJECT = "proj"


# --- harness ---------------------------------------------------------------------------------


class Commands:
    """A stand-in command table: enough commands to exercise every kind of reply."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.events: Broadcaster[dict[str, Any]] = Broadcaster(drop_marker)
        self.subscriptions: list[Subscription[dict[str, Any]]] = []

    async def __call__(self, req: Request) -> Any:
        if req.cmd == "status":
            return {"pid": os.getpid(), "args": req.args}
        if req.cmd == "slow":
            self.slow_started.set()
            await self.release.wait()
            return "done"
        if req.cmd == "restart":
            if not isinstance(req.args.get("name"), str):
                raise ProtocolError(protocol.BAD_ARGS, "restart needs args.name (a string)")
            return None
        if req.cmd == "boom":
            raise RuntimeError("kaboom")
        if req.cmd == "unencodable":
            return {"value": object()}
        if req.cmd == "events":
            subscription = self.events.subscribe(maxsize=int(req.args.get("maxsize", 1000)))
            self.subscriptions.append(subscription)
            return subscription
        raise ProtocolError(protocol.UNKNOWN_COMMAND, f"unknown command {req.cmd!r}")


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 15))


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short XDG_RUNTIME_DIR that another uid can traverse (pytest's tmp_path is 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="devsup-t-"))
    base.chmod(0o711)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[ControlServer, Commands]]:
    commands = Commands()
    server = ControlServer(paths.socket_path(PROJECT), commands, **options)
    await server.start()
    try:
        yield server, commands
    finally:
        commands.release.set()
        await server.close()


@contextlib.asynccontextmanager
async def connection(
    path: Path,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
) -> dict[str, Any]:
    writer.write(line)
    await writer.drain()
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), 5))
    return reply


def call(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """One request from a fresh CLI client (blocking: run it in a thread)."""
    with Client(path) as client:
        return client.call(cmd, args)


def request_line(request_id: Any, cmd: str, args: dict[str, Any] | None = None) -> bytes:
    return protocol.encode(protocol.request(request_id, cmd, args))


# --- paths -----------------------------------------------------------------------------------


def test_paths_follow_xdg_and_fall_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Socket and state paths come from XDG variables read at call time, with defaults."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert paths.socket_path("cj") == Path("/run/user/1000/devsup/cj.sock")
    assert paths.state_file("cj") == tmp_path / "devsup" / "cj.json"
    assert paths.log_file("cj") == tmp_path / "devsup" / "cj.log"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.socket_dir() == Path(f"/tmp/devsup-{os.getuid()}")
    assert paths.state_dir() == tmp_path / ".local" / "state" / "devsup"


def test_socket_path_too_long_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long XDG_RUNTIME_DIR gives SocketPathTooLong naming the path, its length and the limit."""
    long_dir = "/run/" + "x" * 100
    monkeypatch.setenv("XDG_RUNTIME_DIR", long_dir)
    with pytest.raises(SocketPathTooLong) as caught:
        paths.socket_path(PROJECT)
    message = str(caught.value)
    assert "\n" not in message
    expected = f"{long_dir}/devsup/{PROJECT}.sock"
    assert expected in message
    assert f"{len(expected)} bytes" in message
    assert "107" in message
    assert "XDG_RUNTIME_DIR" in message
    with pytest.raises(SocketPathTooLong):
        Client(Path(expected))


def test_find_only_socket(runtime_dir: Path) -> None:
    """find_only_socket returns the socket when it is alone, None when there are none or several."""
    directory = paths.socket_dir()
    directory.mkdir(mode=0o700)
    assert paths.find_only_socket() is None
    (directory / "not-a-socket.sock").write_text("")
    listeners = []
    for name in ("a", "b"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(directory / f"{name}.sock"))
        listeners.append(sock)
        if name == "a":
            assert paths.find_only_socket() == directory / "a.sock"
    assert paths.find_only_socket() is None
    for sock in listeners:
        sock.close()


# --- permissions and peers -------------------------------------------------------------------


def test_socket_dir_0700_and_socket_0600(runtime_dir: Path) -> None:
    """start() creates the directory 0700 (fixing a looser one of ours) and the socket 0600."""

    async def scenario() -> None:
        paths.socket_dir().mkdir(mode=0o755)
        os.chmod(paths.socket_dir(), 0o755)  # mkdir's mode is filtered by the umask
        async with serving() as (server, _):
            assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700
            info = server.path.lstat()
            assert stat.S_ISSOCK(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o600
        assert not server.path.exists()

    run(scenario())


def test_socket_dir_of_another_user_is_refused(runtime_dir: Path) -> None:
    """A socket directory owned by another uid is not used (someone could be listening there)."""

    async def scenario() -> None:
        paths.socket_dir().mkdir(mode=0o700)
        os.chown(paths.socket_dir(), NOBODY, NOBODY)
        with pytest.raises(DevsupError, match="belongs to uid 65534"):
            await ControlServer(paths.socket_path(PROJECT), Commands()).start()

    run(scenario())


def test_uid_check_refuses_on_a_real_connection(runtime_dir: Path) -> None:
    """A peer whose uid is not allowed gets one `forbidden` error and is disconnected."""

    async def scenario() -> None:
        with capture_logs() as logs:
            async with (
                serving(allowed_uids=frozenset({NOBODY})) as (server, _),
                connection(server.path) as (reader, writer),
            ):
                reply = await roundtrip(reader, writer, request_line(1, "status"))
                assert reply["ok"] is False
                assert reply["error"]["code"] == "forbidden"
                assert await asyncio.wait_for(reader.read(), 5) == b""
        refused = [entry for entry in logs if entry["event"] == "control.peer_refused"]
        assert refused[0]["peer_uid"] == os.getuid()
        assert refused[0]["peer_pid"] == os.getpid()

    run(scenario())


def _python_for(uid: int) -> str:
    """An interpreter that `uid` may execute (pyenv under /root is not one)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", candidate, "-c", ""],
            capture_output=True,
            cwd="/",
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    raise AssertionError(f"no python3 that uid {uid} can run (tried {sys.executable})")


@pytest.fixture
def readable_package() -> Iterator[Path]:
    """A copy of the package's source in a 0755 temp dir: another uid can import it from there.

    The checkout itself may sit under a 0700 home directory that `nobody` cannot enter.
    """
    base = Path(tempfile.mkdtemp(prefix="devsup-src-"))
    try:
        shutil.copytree(
            REPO / "devsupervisor",
            base / "devsupervisor",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


PEER_SCRIPT = """
import sys
from pathlib import Path
from devsupervisor.control.client import Client
from devsupervisor.errors import DevsupError
try:
    Client(Path(sys.argv[1]), timeout=5).call("status")
except DevsupError as exc:
    print(type(exc).__name__, exc)
else:
    print("accepted")
"""


def test_another_uid_is_refused_as_a_real_process(
    runtime_dir: Path, readable_package: Path
) -> None:
    """A client running as `nobody` is stopped by the 0700 directory, and by SO_PEERCRED past it."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    python = _python_for(NOBODY)
    # The real client, from the copy nobody can read, on that interpreter (stdlib only).
    as_uid = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python)
    env = {"PYTHONPATH": str(readable_package), "PATH": os.environ["PATH"]}
    cwd = str(readable_package)
    importable = subprocess.run(
        [*as_uid, "-c", "import devsupervisor.control.client, devsupervisor.errors"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert importable.returncode == 0, f"the client does not import as nobody: {importable.stderr}"

    async def as_nobody(path: Path) -> str:
        proc = await asyncio.create_subprocess_exec(
            *as_uid,
            *("-c", PEER_SCRIPT, str(path)),
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return out.decode().strip()

    async def scenario() -> None:
        async with serving() as (server, _):
            # As deployed: the directory's permissions stop the peer before the daemon sees it.
            assert (await as_nobody(server.path)).startswith("PeerRefused permission denied")
            # With the file permissions opened up, the uid check is what refuses it.
            server.path.parent.chmod(0o711)
            server.path.chmod(0o666)
            with capture_logs() as logs:
                answer = await as_nobody(server.path)
            assert answer.startswith("PeerRefused the devsup daemon refused this user")
            assert f"uid {NOBODY}" in answer
            refused = [e["peer_uid"] for e in logs if e["event"] == "control.peer_refused"]
            assert refused == [NOBODY]
            # Root and the daemon's own user still get in.
            assert (await asyncio.to_thread(call, server.path, "status"))["pid"]

    run(scenario())


# --- framing and errors ----------------------------------------------------------------------

BAD_INPUTS = {
    "too long": (b"x" * (protocol.MAX_LINE + 1) + b"\n", "bad_request", None),
    "far too long": (b'{"id": 7, "pad": "' + b"y" * (1 << 20) + b'"}\n', "bad_request", None),
    "bad json": (b'{"id": 1, "cmd": \n', "bad_request", None),
    "nan is not json": (b'{"id": 1, "cmd": "status", "args": {"x": NaN}}\n', "bad_request", None),
    "deep nesting": (b"[" * 60_000 + b"\n", "bad_request", None),
    "bad utf-8": (b'{"id": 1, "cmd": "st\xffatus"}\n', "bad_request", None),
    "not an object": (b"[1, 2, 3]\n", "bad_request", None),
    "missing cmd": (b'{"id": 3}\n', "bad_request", 3),
    "cmd not a string": (b'{"id": 3, "cmd": 5}\n', "bad_request", 3),
    "args not an object": (b'{"id": 4, "cmd": "status", "args": [1]}\n', "bad_request", 4),
    "unknown command": (request_line(5, "frobnicate"), "unknown_command", 5),
    "bad args": (request_line(6, "restart", {"name": 42}), "bad_args", 6),
    "dispatch raises": (request_line(8, "boom"), "internal", 8),
    "result not json": (request_line(9, "unencodable"), "internal", 9),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_code_and_harms_nobody(runtime_dir: Path, case: str) -> None:
    """Each bad-input class gets its error code; the same and other connections keep working."""
    line, code, request_id = BAD_INPUTS[case]

    async def scenario() -> None:
        async with (
            serving() as (server, _),
            connection(server.path) as (reader, writer),
            connection(server.path) as (other_reader, other_writer),
        ):
            reply = await roundtrip(reader, writer, line)
            assert reply["ok"] is False
            assert reply["error"]["code"] == code
            assert reply["id"] == request_id
            assert reply["error"]["message"]
            again = await roundtrip(reader, writer, request_line(10, "status"))
            assert again["ok"] is True
            assert again["id"] == 10
            other = await roundtrip(other_reader, other_writer, request_line("x", "status"))
            assert other["ok"] is True

    run(scenario())


def test_line_of_exactly_max_length_is_accepted(runtime_dir: Path) -> None:
    """A request of exactly MAX_LINE bytes (plus newline) is served; one byte more is not."""

    async def scenario() -> None:
        async with serving() as (server, _), connection(server.path) as (reader, writer):
            base = len(request_line(1, "status", {"pad": ""})) - 1
            pad = "p" * (protocol.MAX_LINE - base)
            exact = request_line(1, "status", {"pad": pad})
            assert len(exact) == protocol.MAX_LINE + 1
            assert (await roundtrip(reader, writer, exact))["ok"] is True
            over = request_line(2, "status", {"pad": pad + "p"})
            assert (await roundtrip(reader, writer, over))["error"]["code"] == "bad_request"

    run(scenario())


def test_requests_on_one_connection_are_answered_in_order(runtime_dir: Path) -> None:
    """Several requests written at once on one connection are answered one by one, in order."""

    async def scenario() -> None:
        async with serving() as (server, _), connection(server.path) as (reader, writer):
            writer.write(b"".join(request_line(i, "status", {"n": i}) for i in range(20)))
            await writer.drain()
            for i in range(20):
                reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
                assert (reply["id"], reply["result"]["args"]) == (i, {"n": i})

    run(scenario())


def test_internal_error_is_logged_and_server_keeps_going(runtime_dir: Path) -> None:
    """An exception in dispatch is logged as control.dispatch_failed with its command."""

    async def scenario() -> None:
        with capture_logs() as logs:
            async with serving() as (server, _):
                client = Client(server.path)
                with pytest.raises(RemoteError) as caught:
                    await asyncio.to_thread(client.call, "boom")
                assert caught.value.code == "internal"
                assert "kaboom" in caught.value.message
                assert (await asyncio.to_thread(client.call, "status"))["pid"] == os.getpid()
                client.close()
        failed = [entry for entry in logs if entry["event"] == "control.dispatch_failed"]
        assert failed[0]["cmd"] == "boom"

    run(scenario())


# --- concurrency -----------------------------------------------------------------------------


def test_fifty_clients_answered_while_a_slow_command_runs(runtime_dir: Path) -> None:
    """50 concurrent CLI clients get their answers while another request is still in dispatch."""

    async def scenario() -> None:
        async with serving() as (server, commands):
            slow_client = Client(server.path, timeout=None)
            slow = asyncio.ensure_future(asyncio.to_thread(slow_client.call, "slow"))
            await asyncio.wait_for(commands.slow_started.wait(), 5)

            def one(i: int) -> Any:
                with Client(server.path, timeout=5) as client:
                    return client.call("status", {"i": i})

            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max_workers=50) as pool:
                replies = await asyncio.gather(
                    *(loop.run_in_executor(pool, one, i) for i in range(50))
                )
            assert [reply["args"]["i"] for reply in replies] == list(range(50))
            assert not slow.done()
            commands.release.set()
            assert await asyncio.wait_for(slow, 5) == "done"
            slow_client.close()

    run(scenario())


def test_close_cancels_pending_dispatch_and_hangs_up(
    runtime_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close() during a slow dispatch cancels it; the client is told the daemon hung up."""

    async def scenario() -> None:
        commands = Commands()
        server = ControlServer(paths.socket_path(PROJECT), commands)
        await server.start()
        pending = asyncio.ensure_future(asyncio.to_thread(call, server.path, "slow"))
        await asyncio.wait_for(commands.slow_started.wait(), 5)
        await server.close()
        with pytest.raises(DaemonNotRunning, match="closed the connection before answering"):
            await asyncio.wait_for(pending, 5)
        assert not server.path.exists()

    run(scenario())
    assert not [r for r in caplog.records if r.name == "asyncio"]  # no "Exception in callback"


# --- streaming -------------------------------------------------------------------------------

STREAM_EVENTS = 6000
STREAM_BATCH = 200


def caught_up(received: list[list[int]], count: int) -> Callable[[], bool]:
    return lambda: all(len(seqs) == count for seqs in received)


def test_followers_stream_while_one_stalls(runtime_dir: Path) -> None:
    """3 followers get every event while a 4th never reads; publish never waits; 4th is marked."""

    async def follow(path: Path, received: list[int]) -> None:
        async with connection(path) as (reader, writer):
            writer.write(request_line("f", "events", {"maxsize": 500}))
            await writer.drain()
            while len(received) < STREAM_EVENTS:
                line = await reader.readline()
                assert line, "stream ended early"
                received.append(json.loads(line)["event"]["seq"])

    async def scenario() -> None:
        async with serving() as (server, commands):
            stalled = socket.socket(socket.AF_UNIX)
            stalled.connect(str(server.path))
            stalled.sendall(request_line("s", "events", {"maxsize": 500}))
            await wait_until(lambda: len(commands.subscriptions) == 1, "the stalled subscription")
            received: list[list[int]] = [[], [], []]
            followers = [asyncio.create_task(follow(server.path, r)) for r in received]
            await wait_until(lambda: len(commands.subscriptions) == 4, "three followers")

            publishing = 0.0
            pad = "z" * 300  # big enough that the stalled socket's kernel buffer fills
            for start in range(0, STREAM_EVENTS, STREAM_BATCH):
                began = time.perf_counter()
                for seq in range(start, start + STREAM_BATCH):
                    commands.events.publish({"event": "tick", "seq": seq, "pad": pad})
                publishing += time.perf_counter() - began
                await wait_until(caught_up(received, start + STREAM_BATCH), "followers")
            await asyncio.gather(*followers)
            assert all(r == list(range(STREAM_EVENTS)) for r in received)
            assert publishing < 1.0  # 6000 publishes to 4 subscribers: no waiting anywhere

            stalled_sub = commands.subscriptions[0]
            assert stalled_sub.pending <= 500
            assert stalled_sub.dropped > 0

            # The stalled follower wakes up: old events, then the gap's marker; none lost silently.
            stalled.setblocking(False)
            loop = asyncio.get_running_loop()
            buffer, seqs, dropped = b"", list[int](), 0
            while len(seqs) + dropped < STREAM_EVENTS:
                chunk = await asyncio.wait_for(loop.sock_recv(stalled, 1 << 16), 5)
                assert chunk, "stream ended early"
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    payload = json.loads(line)["event"]
                    if payload["event"] == "stream.dropped":
                        dropped += payload["dropped"]
                    else:
                        seqs.append(payload["seq"])
            stalled.close()
            assert dropped > 0
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == len(seqs)

    run(scenario())


def test_follower_hangup_closes_its_subscription(runtime_dir: Path) -> None:
    """A follower that disconnects during a quiet spell is unsubscribed at once."""

    async def scenario() -> None:
        async with serving() as (server, commands):
            async with connection(server.path) as (reader, writer):
                writer.write(request_line(1, "events"))
                await writer.drain()
                await wait_until(lambda: commands.events.subscribers == 1, "the subscription")
                commands.events.publish({"event": "tick"})
                reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
                assert reply == {"id": 1, "event": {"event": "tick"}}
            await wait_until(lambda: commands.events.subscribers == 0, "unsubscribe on hangup")

    run(scenario())


def test_client_stream_yields_events_and_close_ends_it(runtime_dir: Path) -> None:
    """Client.stream yields event payloads; server close ends the stream and unsubscribes."""

    async def scenario() -> None:
        async with serving() as (server, commands):
            stream = Client(server.path).stream("events")
            first = asyncio.ensure_future(asyncio.to_thread(next, stream))
            await wait_until(lambda: commands.events.subscribers == 1, "the subscription")
            commands.events.publish({"event": "build.started"})
            assert await asyncio.wait_for(first, 5) == {"event": "build.started"}
            rest = asyncio.ensure_future(asyncio.to_thread(list, stream))
            await server.close()
            assert await asyncio.wait_for(rest, 5) == []
            assert commands.events.subscribers == 0

    run(scenario())


def test_client_stream_raises_on_refused_request(runtime_dir: Path) -> None:
    """A streaming request the daemon rejects raises RemoteError from the iterator."""

    async def scenario() -> None:
        async with serving() as (server, _):
            stream = Client(server.path).stream("nosuch")
            with pytest.raises(RemoteError) as caught:
                await asyncio.to_thread(next, stream)
            assert caught.value.code == "unknown_command"

    run(scenario())


# --- one daemon per socket -------------------------------------------------------------------


def test_stale_socket_is_replaced(runtime_dir: Path) -> None:
    """A socket file left by a killed daemon (connect refused) is replaced on start."""

    async def scenario() -> None:
        path = paths.socket_path(PROJECT)
        path.parent.mkdir(mode=0o700)
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(path))
        dead.close()  # the file stays and refuses connections, as after kill -9
        with capture_logs() as logs:
            async with serving() as (server, _):
                reply = await asyncio.to_thread(call, server.path, "status")
                assert reply["pid"] == os.getpid()
        assert any(entry["event"] == "control.stale_socket_removed" for entry in logs)

    run(scenario())


SECOND_DAEMON = """
import asyncio, sys
from pathlib import Path
from devsupervisor.control.server import ControlServer
from devsupervisor.errors import AlreadyRunning

async def dispatch(request):
    return None

async def main():
    try:
        await ControlServer(Path(sys.argv[1]), dispatch).start()
    except AlreadyRunning as exc:
        print(exc)
    else:
        print("started")

asyncio.run(main())
"""


def test_second_daemon_refuses_with_a_clear_message(runtime_dir: Path) -> None:
    """A second server, in this process or another, raises AlreadyRunning naming pid and socket."""

    async def scenario() -> None:
        async with serving() as (server, _):
            with pytest.raises(AlreadyRunning) as caught:
                await ControlServer(server.path, Commands()).start()
            message = str(caught.value)
            assert "\n" not in message
            assert f"pid {os.getpid()}" in message
            assert str(server.path) in message
            assert repr(PROJECT) in message
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", SECOND_DAEMON, str(server.path)),
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            assert f"already running for project {PROJECT!r} (pid {os.getpid()}" in out.decode()
            # The refused starts did not disturb the running one.
            assert (await asyncio.to_thread(call, server.path, "status"))["pid"]

    run(scenario())


def test_live_listener_without_lock_is_detected(runtime_dir: Path) -> None:
    """A socket that answers is never replaced, even when no lock file vouches for it."""

    async def scenario() -> None:
        path = paths.socket_path(PROJECT)
        path.parent.mkdir(mode=0o700)
        other = socket.socket(socket.AF_UNIX)
        other.bind(str(path))
        other.listen()
        try:
            with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
                await ControlServer(path, Commands()).start()
            assert path.exists()
        finally:
            other.close()

    run(scenario())


def test_close_leaves_a_socket_that_is_not_ours(runtime_dir: Path) -> None:
    """close() removes the socket file only if it is still the one this server bound."""

    async def scenario() -> None:
        async with serving() as (server, _):
            server.path.unlink()
            replacement = socket.socket(socket.AF_UNIX)
            replacement.bind(str(server.path))
        assert server.path.exists()
        replacement.close()

    run(scenario())


# --- client errors ---------------------------------------------------------------------------


def test_client_without_daemon_says_how_to_start_one(runtime_dir: Path) -> None:
    """No socket, or a stale one, is DaemonNotRunning (exit 3) with the commands that start one."""
    path = paths.socket_path(PROJECT)
    with pytest.raises(DaemonNotRunning, match="devsup run` or `devsup service install") as caught:
        Client(path).call("status")
    assert caught.value.exit_code == 3
    path.parent.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(DaemonNotRunning, match="stale socket"):
        Client(path).call("status")


def test_client_call_times_out(runtime_dir: Path) -> None:
    """A call that gets no reply within its timeout raises DaemonNotRunning naming the command."""

    async def scenario() -> None:
        async with serving() as (server, _):
            client = Client(server.path, timeout=0.3)
            with pytest.raises(DaemonNotRunning, match=r"did not answer `slow` within 0\.3 s"):
                await asyncio.to_thread(client.call, "slow")

    run(scenario())


def test_client_reuses_its_connection_after_remote_errors(runtime_dir: Path) -> None:
    """RemoteError carries the code; the client's next call on the same connection works."""

    async def scenario() -> None:
        async with serving() as (server, _):
            with Client(server.path) as client:
                with pytest.raises(RemoteError) as caught:
                    await asyncio.to_thread(client.call, "restart", {})
                assert (caught.value.code, caught.value.exit_code) == ("bad_args", 2)
                assert await asyncio.to_thread(client.call, "restart", {"name": "db"}) is None

    run(scenario())
