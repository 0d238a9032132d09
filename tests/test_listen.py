"""Held listening sockets and notify readiness on real processes (the Go example platform).

These drive `BinaryTarget` the way the platform owner does: an overlap swap is `fork()`, `start`,
`wait_ready` on the twin, then `stop` on the old one; a crash restart is `stop` + `start` on
the same held sockets. A steady client makes a new connection per request meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from devsupervisor.config.model import BinaryConfig, ReadyCheck
from devsupervisor.platform.binary import BinaryTarget
from devsupervisor.platform.listeners import ListenError, Listeners
from devsupervisor.platform.notify_socket import NotifySocket
from devsupervisor.platform.ready import NotReady
from tests.harness import REPO, free_port

# A steady client: about 150 requests/s, each on a new connection.
REQUEST_INTERVAL = 1 / 150
REQUEST_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def go_platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go example, built once for this module."""
    out = tmp_path_factory.mktemp("go") / "platform"
    subprocess.run(
        ["go", "build", "-o", str(out), "./cmd"],
        cwd=REPO / "examples" / "platform-services",
        check=True,
        timeout=300,
    )
    return out


@dataclass
class SteadyClient:
    """GET /version over a new connection per request, from a thread, counting failures."""

    connect: tuple[int, str | tuple[str, int]]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    # Held around each request: `between_requests` takes it to act while none is in flight.
    _turn: threading.Lock = field(default_factory=threading.Lock)

    def request(self) -> str:
        family, address = self.connect
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(address)
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: platform\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
            raise OSError(f"bad reply {data[:80]!r}")
        return body.decode().strip()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._turn:
                try:
                    self.versions.add(self.request())
                    self.ok += 1
                except OSError as exc:
                    self.failures.append(f"{time.monotonic():.3f} {exc!r}")
            self._stop.wait(REQUEST_INTERVAL)

    def between_requests(self, action: Callable[[], None]) -> None:
        """Run `action` while no request is in flight: a SIGKILL then tests what devsup
        promises (no connection refused while nothing serves), not the loss of the request the
        killed process itself was answering, which no supervisor can save."""
        with self._turn:
            action()

    def __enter__(self) -> SteadyClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the stream (before the last platform stops: after it, requests would wait in
        the backlog for a process that never comes)."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=REQUEST_TIMEOUT * 2)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config(
    workdir: Path, run: str, listen: list[str], *, notify: bool = True, timeout: float = 10
) -> BinaryConfig:
    ready = ReadyCheck(notify=True, timeout=timeout) if notify else None
    return BinaryConfig(
        workdir=workdir,
        build="true",
        run=run,
        env={"PLATFORM_ADDR": "127.0.0.1:1"},  # the fallback bind would fail: must inherit
        listen=tuple(listen),
        ready=ready,
        stop_timeout=5,
    )


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="dsl", dir="/tmp") as path:
        yield Path(path)


def _target(
    config: BinaryConfig, runtime_dir: Path, *, listeners: Listeners | None = None
) -> BinaryTarget:
    return BinaryTarget(
        config, on_output=lambda line: None, runtime_dir=runtime_dir, listeners=listeners
    )


async def _wait_exit(target: BinaryTarget, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while target.is_running():
        assert time.monotonic() < deadline, "platform did not exit"
        await asyncio.sleep(0.005)


async def _swap(old: BinaryTarget) -> BinaryTarget:
    """What the owner does with an overlap swap: twin up and ready, then the old one stops."""
    new = old.fork()
    await new.start()
    await new.wait_ready()
    await old.stop()
    return new


def test_listen_pid_is_the_platform_and_holds_the_socket(
    go_platform: Path, runtime_dir: Path
) -> None:
    """LISTEN_PID is the platform process's own pid, and it holds devsup's socket."""
    port = free_port()

    async def main() -> None:
        target = _target(
            _config(runtime_dir, f"exec {go_platform}", [f"127.0.0.1:{port}"]), runtime_dir
        )
        await target.start()
        await target.wait_ready()
        try:
            pid = target.pid
            assert pid is not None
            env = psutil.Process(pid).environ()
            assert env["LISTEN_PID"] == str(pid)
            assert env["LISTEN_FDS"] == "1" and env["LISTEN_FDNAMES"] == f"127.0.0.1-{port}"
            listeners = target.listeners
            held = os.readlink(f"/proc/self/fd/{listeners.fds()[0]}")
            # The Go example moves fd 3 to a descriptor of its own (net.FileListener).
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert held in fds
            assert target.notify_status == "serving v1 on 1 socket(s)"
        finally:
            await target.stop()
            target.listeners.close()

    asyncio.run(main())


def test_zero_failed_requests_over_reloads_and_kills(go_platform: Path, runtime_dir: Path) -> None:
    """15 overlap swaps and 2 SIGKILL crash restarts under a steady client lose no request."""
    port = free_port()
    listen = [f"127.0.0.1:{port}"]
    listeners = Listeners(listen)  # bound before the client's first request

    async def main(client: SteadyClient) -> None:
        config = _config(runtime_dir, f"exec {go_platform}", listen)
        target = _target(config, runtime_dir, listeners=listeners)
        assert target.overlap_swap
        await target.start()
        await target.wait_ready()
        try:
            for i in range(17):
                served = client.ok
                while client.ok < served + 5:  # a few requests on each process
                    await asyncio.sleep(0.01)
                if i in (5, 11):
                    pid = target.pid
                    assert pid is not None
                    client.between_requests(lambda pid=pid: os.kill(pid, signal.SIGKILL))
                    await _wait_exit(target)
                    await target.stop()  # the crash restart: same sockets, new process
                    await target.start()
                    await target.wait_ready()
                    assert target.pid != pid
                else:
                    target = await _swap(target)
        finally:
            client.stop()
            await target.stop()

    try:
        with SteadyClient((socket.AF_INET, ("127.0.0.1", port))) as client:
            asyncio.run(main(client))
    finally:
        listeners.close()
    assert client.ok > 100
    assert client.failures == [], client.failures[:5]


def test_stop_then_start_keeps_clients_waiting_in_the_backlog(
    go_platform: Path, runtime_dir: Path
) -> None:
    """Without notify, swaps are stop-then-start on the held socket: still no failed request."""
    port = free_port()
    listen = [f"127.0.0.1:{port}"]
    listeners = Listeners(listen)

    async def main(client: SteadyClient) -> None:
        config = _config(runtime_dir, f"exec {go_platform}", listen, notify=False)
        target = _target(config, runtime_dir, listeners=listeners)
        assert not target.overlap_swap
        for i in range(10):
            served = client.ok
            await target.start()
            while client.ok < served + 5:
                await asyncio.sleep(0.01)
            if i == 9:
                client.stop()
            await target.stop()

    try:
        with SteadyClient((socket.AF_INET, ("127.0.0.1", port))) as client:
            asyncio.run(main(client))
    finally:
        listeners.close()
    assert client.ok >= 50
    assert client.failures == [], client.failures[:5]


def test_never_ready_twin_times_out_and_old_keeps_serving(
    go_platform: Path, runtime_dir: Path
) -> None:
    """A new process that never sends READY=1 fails its start; the old one serves throughout."""
    port = free_port()
    listen = [f"127.0.0.1:{port}"]
    listeners = Listeners(listen)

    async def main(client: SteadyClient) -> None:
        old = _target(
            _config(runtime_dir, f"exec {go_platform}", listen), runtime_dir, listeners=listeners
        )
        await old.start()
        await old.wait_ready()
        silent = _config(
            runtime_dir, f"exec {sys.executable} -c 'import time; time.sleep(60)'", listen
        )
        twin = _target(
            BinaryConfig(**{**silent.__dict__, "ready": ReadyCheck(notify=True, timeout=1)}),
            runtime_dir,
            listeners=old.listeners,
        )
        await twin.start()
        with pytest.raises(NotReady, match="not ready after 1s"):
            await twin.wait_ready()
        await twin.stop()
        served = client.ok
        while client.ok < served + 5:
            await asyncio.sleep(0.01)
        assert old.is_running()
        client.stop()
        await old.stop()

    try:
        with SteadyClient((socket.AF_INET, ("127.0.0.1", port))) as client:
            asyncio.run(main(client))
    finally:
        listeners.close()
    # The twin held the socket too but never accepted: every connection went to the old one.
    assert client.failures == [], client.failures[:5]
    assert client.versions == {"v1"}


def test_port_taken_by_a_stranger_is_a_clear_error(runtime_dir: Path) -> None:
    """A `listen` address another process listens on fails the start, naming the address."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        message = f"platform.binary.listen: 127.0.0.1:{port} is already in use"
        with pytest.raises(ListenError) as caught:
            Listeners([f"127.0.0.1:{free_port()}", f"127.0.0.1:{port}"])
        assert str(caught.value) == message
        target = _target(_config(runtime_dir, "exec true", [f"127.0.0.1:{port}"]), runtime_dir)
        with pytest.raises(ListenError, match="already in use"):
            asyncio.run(target.start())
        assert target.pid is None


def test_unix_listen_serves_and_swaps(go_platform: Path, runtime_dir: Path) -> None:
    """`unix:PATH` is bound by devsup, served by the platform across swaps, removed at close."""
    path = runtime_dir / "platform.sock"
    listeners = Listeners([f"unix:{path}"])

    async def main(client: SteadyClient) -> None:
        config = _config(runtime_dir, f"exec {go_platform}", [f"unix:{path}"])
        target = _target(config, runtime_dir, listeners=listeners)
        await target.start()
        await target.wait_ready()
        for _ in range(3):
            served = client.ok
            while client.ok < served + 5:
                await asyncio.sleep(0.01)
            target = await _swap(target)
        client.stop()
        await target.stop()

    assert path.is_socket()
    try:
        with SteadyClient((socket.AF_UNIX, str(path))) as client:
            asyncio.run(main(client))
    finally:
        listeners.close()
    assert client.failures == [], client.failures[:5]
    assert client.ok >= 15
    assert not path.exists()


def test_update_rebinds_only_what_changed() -> None:
    """A changed `listen` keeps unchanged sockets (same fd), binds new ones, frees removed ones."""
    a, b, c = (f"127.0.0.1:{free_port()}" for _ in range(3))
    listeners = Listeners([a, b])
    try:
        fd_a = listeners.fds()[0]
        assert listeners.update([a, b]) is False
        assert listeners.update([a, c]) is True
        assert listeners.addresses == [a, c] and listeners.fds()[0] == fd_a
        with socket.socket() as probe:  # b is free again
            probe.bind(("127.0.0.1", int(b.rpartition(":")[2])))
        with socket.socket() as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.listen()
            taken = f"127.0.0.1:{stranger.getsockname()[1]}"
            with pytest.raises(ListenError):
                listeners.update([a, taken])
            assert listeners.addresses == [a, c]  # a failed update changes nothing
        assert listeners.env() == {
            "LISTEN_FDS": "2",
            "LISTEN_FDNAMES": f"{a.replace(':', '-')}:{c.replace(':', '-')}",
        }
    finally:
        listeners.close()


# Sends each line of stdin (with \\n for newlines) as one datagram to NOTIFY_SOCKET; with
# arguments, sends those once and then waits.
NOTIFIER = """
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for message in sys.argv[1:] or sys.stdin:
    s.sendto(message.strip().replace("\\\\n", "\\n").encode(), os.environ["NOTIFY_SOCKET"])
time.sleep(60)
"""


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_notify_accepts_only_its_own_process(runtime_dir: Path) -> None:
    """READY=1 from another process is refused; the watched process's messages count."""

    async def main() -> None:
        notify = NotifySocket(runtime_dir, "t")
        watched = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            NOTIFIER,
            stdin=subprocess.PIPE,
            env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
        )
        assert watched.stdin is not None
        try:
            notify.watch(watched.pid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
                stranger.sendto(b"READY=1\nSTATUS=stranger", str(notify.path))
            # Datagrams are read in order: once the watched one's STATUS is in, the stranger's
            # message has been read (and refused).
            watched.stdin.write(b"STATUS=mine\n")
            await _until(lambda: notify.status == "mine", "the watched process's status")
            assert not notify.ready.is_set()
            watched.stdin.write(b"READY=1\n")
            await asyncio.wait_for(notify.ready.wait(), 10)
        finally:
            watched.kill()
            await watched.wait()
            notify.close()
        assert not notify.path.exists()

    asyncio.run(main())


@pytest.mark.parametrize("prefix", ["exec ", ""])
def test_notify_ready_and_status_from_the_platform(runtime_dir: Path, prefix: str) -> None:
    """The platform makes itself ready and reports STATUS=, exec'd by the shell or its child."""
    script = runtime_dir / "notifier.py"
    script.write_text(NOTIFIER)

    async def main() -> None:
        run = f"{prefix}{sys.executable} {script} 'READY=1\\nSTATUS=warm'"
        target = _target(_config(runtime_dir, run, []), runtime_dir)
        await target.start()
        try:
            await target.wait_ready()
            assert target.notify_status == "warm"
        finally:
            await target.stop()

    asyncio.run(main())
