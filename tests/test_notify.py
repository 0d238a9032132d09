"""The sd_notify client, observed on a real AF_UNIX datagram socket given as NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from devsupervisor.systemd.notify import Notifier, parse_watchdog_interval, run_watchdog


class NotifyReceiver:
    """Binds a datagram socket the way systemd does and records (time, message) in a thread."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        # Short, so the thread notices close() soon; this is a poll period, not a test wait.
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def holds_within(self, predicate: Callable[[list[str]], bool], timeout: float) -> bool:
        """Whether predicate(messages) comes to hold before the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate([m for _, m in self.messages]):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_for(
        self, predicate: Callable[[list[str]], bool], timeout: float = 5.0
    ) -> list[tuple[float, str]]:
        """Wait until predicate(messages) holds; fail with what arrived after the deadline."""
        if not self.holds_within(predicate, timeout):
            pytest.fail(f"condition not met; received {[m for _, m in self.messages]}")
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyReceiver]:
    """A notify socket bound at a filesystem path, then at an abstract `@` name."""
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@devsup-test-{os.getpid()}-{uuid.uuid4().hex}"
    r = NotifyReceiver(address)
    yield r
    r.close()


def _env(receiver: NotifyReceiver, watchdog_usec: int = 200_000) -> dict[str, str]:
    return {
        "NOTIFY_SOCKET": receiver.address,
        "WATCHDOG_USEC": str(watchdog_usec),
        "WATCHDOG_PID": str(os.getpid()),
        "OTHER": "kept",
    }


def _pings(messages: list[str]) -> int:
    return messages.count("WATCHDOG=1")


def test_sequence_ready_status_watchdog_stopping(receiver: NotifyReceiver) -> None:
    """READY, STATUS, watchdog pings and STOPPING arrive in order on the notify socket."""
    notifier = Notifier.from_env(_env(receiver))

    async def daemon() -> None:
        stop = asyncio.Event()
        notifier.ready()
        notifier.status("running: stack skeleton, platform up")
        pinger = asyncio.create_task(run_watchdog(notifier, stop))
        await asyncio.to_thread(receiver.wait_for, lambda m: _pings(m) >= 3)
        stop.set()
        await pinger
        notifier.stopping()

    asyncio.run(daemon())
    notifier.close()
    messages = [m for _, m in receiver.wait_for(lambda m: "STOPPING=1" in m)]
    assert messages[:2] == ["READY=1", "STATUS=running: stack skeleton, platform up"]
    assert set(messages[2:-1]) == {"WATCHDOG=1"}
    assert messages[-1] == "STOPPING=1"


def test_watchdog_pings_at_half_the_interval(receiver: NotifyReceiver) -> None:
    """WATCHDOG_USEC=200000 gives a ping about every 0.1 s: never faster, and well within 0.2 s."""
    notifier = Notifier.from_env(_env(receiver, watchdog_usec=200_000))
    assert notifier.watchdog_interval() == 0.2

    async def daemon() -> None:
        stop = asyncio.Event()
        pinger = asyncio.create_task(run_watchdog(notifier, stop))
        await asyncio.to_thread(receiver.wait_for, lambda m: _pings(m) >= 11)
        stop.set()
        await pinger

    asyncio.run(daemon())
    notifier.close()
    times = [t for t, m in receiver.messages if m == "WATCHDOG=1"][:11]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Lower bound is exact by construction (timer fires no earlier than the period); the upper
    # bound on the median is generous so a loaded machine's odd late ping does not fail it.
    assert times[-1] - times[0] >= 10 * 0.1 * 0.9
    assert 0.09 <= statistics.median(gaps) <= 0.17


def test_blocked_loop_stops_pinging(receiver: NotifyReceiver) -> None:
    """A wedged event loop sends no pings, and pinging resumes once the loop turns again."""
    notifier = Notifier.from_env(_env(receiver, watchdog_usec=100_000))
    blocked = threading.Event()
    release = threading.Event()
    loop_ready = threading.Event()
    stop_holder: list[asyncio.Event] = []
    loop_holder: list[asyncio.AbstractEventLoop] = []

    def wedge() -> None:
        blocked.set()
        release.wait(10)  # a blocking call on the loop, as a bug in the daemon would make

    async def daemon() -> None:
        stop = asyncio.Event()
        stop_holder.append(stop)
        loop_holder.append(asyncio.get_running_loop())
        loop_ready.set()
        await run_watchdog(notifier, stop)

    thread = threading.Thread(target=lambda: asyncio.run(daemon()))
    thread.start()
    try:
        assert loop_ready.wait(5)
        loop = loop_holder[0]
        receiver.wait_for(lambda m: _pings(m) >= 3)
        loop.call_soon_threadsafe(wedge)
        assert blocked.wait(5)
        # Pings sent before the wedge are queued ahead of this marker (datagrams keep their
        # order), so once it is received any later ping would have come from a wedged loop.
        marker = Notifier(receiver.address)
        marker.send("MARK=1")
        marker.close()
        receiver.wait_for(lambda m: "MARK=1" in m)

        def after_mark(m: list[str]) -> int:
            return _pings(m[m.index("MARK=1") :])

        # Eight periods of silence: a live loop would have pinged about eight times.
        assert not receiver.holds_within(lambda m: after_mark(m) > 0, timeout=0.4)
        release.set()
        receiver.wait_for(lambda m: after_mark(m) >= 2)
    finally:
        release.set()
        if loop_holder and stop_holder:
            loop_holder[0].call_soon_threadsafe(stop_holder[0].set)
        thread.join(5)
        notifier.close()
    assert not thread.is_alive()


def test_from_env_unsets_variables_for_children(receiver: NotifyReceiver) -> None:
    """from_env removes NOTIFY_SOCKET and WATCHDOG_* so spawned processes do not inherit them."""
    env = _env(receiver)
    notifier = Notifier.from_env(env)
    assert env == {"OTHER": "kept"}
    assert notifier.is_enabled
    assert notifier.ready()
    notifier.close()
    receiver.wait_for(lambda m: m == ["READY=1"])


def test_no_notify_socket_is_a_silent_noop() -> None:
    """Without NOTIFY_SOCKET every call returns False, logs nothing, and no pinger runs."""
    notifier = Notifier.from_env({"WATCHDOG_USEC": "200000"})
    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert notifier.watchdog_interval() is None
        asyncio.run(asyncio.wait_for(run_watchdog(notifier, asyncio.Event()), timeout=5))
    assert [e for e in logs if e["log_level"] != "debug"] == []


def test_unreachable_socket_never_raises_and_logs_once(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET nobody listens on fails quietly: False, notify.failed logged once."""
    notifier = Notifier(str(tmp_path / "nobody.sock"), watchdog_interval=0.2)
    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    notifier.close()
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert len(failed) == 1
    assert failed[0]["socket"] == str(tmp_path / "nobody.sock")


def test_status_is_one_line(receiver: NotifyReceiver) -> None:
    """A multi-line status is flattened so it cannot inject further assignments."""
    notifier = Notifier(receiver.address)
    notifier.status("build failed:\nREADY=1\tsee logs")
    notifier.close()
    receiver.wait_for(lambda m: m == ["STATUS=build failed: READY=1 see logs"])


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_env(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC counts only when valid and WATCHDOG_PID, if set, is this process."""
    resolved = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert parse_watchdog_interval(resolved) == expected
