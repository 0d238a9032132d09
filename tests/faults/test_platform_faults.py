"""A platform that misbehaves, on a real `devsup run`: it ignores SIGTERM, freezes (SIGSTOP) or
exits while devsup waits for it to be ready, or finds its port taken by a stranger. Each time
devsup ends up serving (or saying clearly why not) and leaves nothing of its own running."""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.faults.conftest import Marked
from tests.faults.support import wait_none_marked
from tests.harness import wait_until

pytestmark = pytest.mark.faults

FAULTY = Path(__file__).parent / "faultyplatform.py"
STOP_TIMEOUT = 1
READY_TIMEOUT = 3


@pytest.fixture
def faulty(marked: Marked) -> Marked:
    """The marked daemon's project running `faultyplatform.py` with short timeouts."""
    project = marked.project
    project.run = f"exec {sys.executable} {FAULTY}"
    project.stop_timeout = STOP_TIMEOUT
    project.ready = {"http": f"{project.url}/healthz", "timeout": READY_TIMEOUT}
    project.write_config()
    return marked


def _platform_pid(m: Marked) -> int:
    return int((m.project.root / "bin" / "pid").read_text())


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stop(m: Marked, within: float) -> None:
    started = time.monotonic()
    result = m.daemon.cli("stop")
    assert result.returncode == 0, result.stderr
    assert m.daemon.proc is not None and m.daemon.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < within
    wait_none_marked(m.mark)


def test_platform_ignoring_sigterm_is_killed_after_stop_timeout(faulty: Marked) -> None:
    """SIGTERM ignored: the swap SIGKILLs the old process after stop_timeout and the new one
    serves; `stop` takes stop_timeout, not for ever, and leaves nothing."""
    daemon, project = faulty.daemon, faulty.project
    project.set_source("v1 IGNORE_TERM")
    daemon.start()
    old = daemon.wait_platform("running")["platform"]["pid"]
    project.set_source("v2 IGNORE_TERM")
    wait_until(lambda: project.version() == "v2 IGNORE_TERM", what="v2 served")
    assert _gone(old)
    kills = [e for e in daemon.logs_of("devsup") if e["event"] == "process.stop.kill"]
    assert any(old in e["pids"] for e in kills), kills
    reload = daemon.wait_platform("running")["platform"]["last_reload"]
    assert STOP_TIMEOUT <= reload["stop"] < STOP_TIMEOUT + 1.5
    _stop(faulty, within=STOP_TIMEOUT + 5)


def test_platform_frozen_during_readiness_is_killed_and_restarted(faulty: Marked) -> None:
    """A new process stopped with SIGSTOP before it is ready: after ready.timeout it counts as
    a failed start, is SIGKILLed (a stopped process cannot act on SIGTERM) and restarted; the
    daemon answers throughout."""
    daemon, project = faulty.daemon, faulty.project
    daemon.start()
    first = daemon.wait_platform("running")["platform"]["pid"]
    project.set_source("v2 SLOW_START")
    frozen = wait_until(lambda: (p := _platform_pid(faulty)) != first and p, what="new process")
    os.kill(frozen, signal.SIGSTOP)
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT:
        asked = time.monotonic()
        assert daemon.status()["platform"]["state"] in ("starting", "crashed")
        assert time.monotonic() - asked < 0.5
    exited = daemon.wait_event("platform.exited", timeout=15)[0]
    assert f"not ready after {READY_TIMEOUT}s" in exited["reason"], exited
    wait_until(lambda: _gone(frozen), what="the frozen process killed")
    wait_until(lambda: project.version() == "v2 SLOW_START", timeout=20, what="restarted")
    assert daemon.status()["platform"]["restarts"] >= 1
    _stop(faulty, within=STOP_TIMEOUT + 5)


def test_platform_exiting_during_readiness_is_a_crash_with_its_code(faulty: Marked) -> None:
    """A process that exits before it is ready: platform.exited with its exit code, a restart
    with backoff, and a fix in the sources gets it serving."""
    daemon, project = faulty.daemon, faulty.project
    daemon.start()
    daemon.wait_platform("running")
    project.set_source("v2 EXIT_EARLY")
    exited = daemon.wait_event("platform.exited", timeout=15)[0]
    assert exited["exit_code"] == 4 and "exited" in exited["reason"], exited
    daemon.wait_event("platform.restart_scheduled")
    project.set_source("v3")
    wait_until(lambda: project.version() == "v3", timeout=20, what="v3 served after the fix")
    daemon.wait_platform("running")
    _stop(faulty, within=STOP_TIMEOUT + 5)


class _Stranger(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"stranger"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stranger(faulty: Marked) -> Iterator[http.server.HTTPServer]:
    """Someone else's HTTP server on the platform's port, answering 200 to everything."""
    server = http.server.HTTPServer(("127.0.0.1", faulty.project.port), _Stranger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_port_taken_by_a_stranger_is_reported_and_the_stranger_left_alone(
    faulty: Marked, stranger: http.server.HTTPServer
) -> None:
    """The platform's port is held by another program (which even answers the readiness
    check): devsup never calls the platform ready, names the holder, never signals it, and
    serves once the port is free and the platform restarted."""
    daemon, project = faulty.daemon, faulty.project
    daemon.start()
    exited = daemon.wait_event("platform.exited", timeout=20)[0]
    reason = exited["reason"]
    assert f"127.0.0.1:{project.port}" in reason and "already in use" in reason, exited
    assert f"pid {os.getpid()}" in reason, reason  # the holder is named: this test process
    assert daemon.status()["platform"]["state"] != "running"
    assert "platform.ready" not in daemon.event_names()
    assert project.version() == "stranger"  # untouched, still serving
    stranger.shutdown()
    stranger.server_close()
    result = daemon.cli("restart", "platform")
    assert result.returncode == 0, result.stderr
    assert project.version() == "v1"
    _stop(faulty, within=STOP_TIMEOUT + 5)
