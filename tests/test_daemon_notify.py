"""The real `devsup run` speaks systemd's notify protocol on a real datagram socket:
STATUS lines, READY=1 once the platform is ready, WATCHDOG=1 at half the interval, STOPPING=1."""

from __future__ import annotations

import itertools
import signal
import socket
import time
from pathlib import Path

from tests.harness import DaemonProcess, FakeProject, private_env, wait_until

# 0.4 s watchdog: devsup must ping every 0.2 s.
WATCHDOG_USEC = 400_000


def _receive_until(sock: socket.socket, stop: str, deadline: float) -> list[tuple[float, str]]:
    got: list[tuple[float, str]] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append((time.monotonic(), data))
        if stop in data:
            break
    return got


def test_notify_sequence(fake_project: FakeProject, tmp_path: Path) -> None:
    """READY=1 comes once the platform serves, STATUS lines describe states, WATCHDOG=1 pings
    at about half the interval, and SIGTERM sends STOPPING=1."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = private_env()
    env["NOTIFY_SOCKET"] = str(sock_path)
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    daemon = DaemonProcess(fake_project.config, env=env, project=fake_project.project)
    try:
        daemon.start()
        before_ready = _receive_until(sock, "READY=1", time.monotonic() + 30)
        assert before_ready and "READY=1" in before_ready[-1][1]
        # READY=1 follows the platform's readiness.
        assert fake_project.version() == "v1"
        assert daemon.status()["platform"]["state"] == "running"
        statuses = [m for _, m in before_ready if m.startswith("STATUS=")]
        assert any("platform" in m for m in statuses)
        pings = _receive_until(sock, "never", time.monotonic() + 1.2)
        times = [t for t, m in pings if "WATCHDOG=1" in m]
        assert len(times) >= 4, pings  # 1.2 s / 0.2 s = 6 expected
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        assert 0.1 <= gaps[len(gaps) // 2] <= 0.3, gaps
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        last = _receive_until(sock, "STOPPING=1", time.monotonic() + 15)
        assert any("STOPPING=1" in m for _, m in last)
        wait_until(lambda: daemon.proc is not None and daemon.proc.poll() == 0, what="exit 0")
    finally:
        daemon.stop()
        sock.close()
