"""A console that goes away (`devsup run 2>&1 | head -c 3000`): dropped on the first write
error, noted once in the log file, and no log call ever raises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from devsupervisor.logs import pipeline
from tests.harness import DaemonProcess, FakeProject, wait_until


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    pipeline.configure(None, console=None)
    structlog.reset_defaults()


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tail(log_file: Path) -> str:
    """The log file's last records, for a failure message."""
    return "\n" + "\n".join(log_file.read_text().splitlines()[-15:])


def test_a_console_whose_reader_exits_is_dropped_and_the_file_goes_on(tmp_path: Path) -> None:
    """Logging into `head -c 300` goes on without an error after head exits; every record is in
    the file, with one log.console_dropped."""
    head = subprocess.Popen(
        ["head", "-c", "300"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert head.stdin is not None
    log_file = tmp_path / "d.log"
    pipeline.configure(log_file, console=head.stdin)
    log = pipeline.get_logger()
    sent = 0
    deadline = time.monotonic() + 10
    while head.poll() is None and time.monotonic() < deadline:
        log.info("build.output", line=f"line {sent}")
        sent += 1
    assert head.wait(timeout=1) == 0
    for _ in range(100):  # the pipe's reader is gone: each of these would raise EPIPE
        log.info("build.output", line=f"line {sent}")
        sent += 1
    head.stdin.close()  # the dead pipe's descriptor now points at /dev/null: closes quietly
    pipeline.configure(None, console=None)
    records = _records(log_file)
    assert [r["line"] for r in records if r["event"] == "build.output"] == [
        f"line {i}" for i in range(sent)
    ]
    dropped = [r for r in records if r["event"] == "log.console_dropped"]
    assert len(dropped) == 1
    assert "BrokenPipe" in str(dropped[0]["error"])


def test_a_failing_log_file_is_reported_once_on_the_console(tmp_path: Path) -> None:
    """When the log file cannot be written (disk full), the console says so once, gets every
    record, and no log call raises."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as console:
        pipeline.configure(Path("/dev/full"), console=console)
        log = pipeline.get_logger()
        for i in range(3):
            log.info("platform.ready", n=i)
        pipeline.configure(None, console=None)
    with os.fdopen(read_end) as reader:
        text = reader.read()
    assert text.count("event='platform.ready'") == 3
    assert text.count("log.file_failed") == 1


def test_daemon_piped_into_head_keeps_supervising(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """`devsup run 2>&1 | head -c 1000`: after head exits, rebuild works, status answers, the
    log file goes on and `stop` stops the daemon and its platform."""
    head = subprocess.Popen(
        ["head", "-c", "1000"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "devsupervisor", "run", "--config", str(daemon.config)],
            env=daemon.env,
            stdout=head.stdin,
            stderr=subprocess.STDOUT,
            cwd=daemon.config.parent,
        )
    finally:
        assert head.stdin is not None
        head.stdin.close()  # only the daemon holds the pipe's write end now
    running = daemon.wait_platform("running")
    head.wait(timeout=30)  # the daemon's start-up alone writes more than that
    log_file = Path(running["daemon"]["log_file"])
    assert daemon.cli("rebuild").returncode == 0, _tail(log_file)
    daemon.wait_platform("running")
    fake_project.set_source("v2")
    wait_until(lambda: fake_project.version() == "v2", what=f"reload after a save{_tail(log_file)}")
    status = daemon.wait_platform("running")
    events = [r["event"] for r in _records(log_file)]
    assert events.count("log.console_dropped") == 1
    assert "build.succeeded" in events[events.index("log.console_dropped") :]
    assert daemon.cli("stop").returncode == 0
    assert daemon.proc.wait(timeout=30) == 0
    for pid in (running["platform"]["pid"], status["platform"]["pid"]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_failing_tap_is_noted_in_the_file_and_never_raises(tmp_path: Path) -> None:
    """A tap that raises does not reach the caller; the file notes it and keeps every record."""

    def broken(record: dict[str, object]) -> None:
        raise RuntimeError("follower bug")

    log_file = tmp_path / "d.log"
    pipeline.configure(log_file, console=None, taps=[broken])
    pipeline.get_logger().info("stack.starting", stack="skeleton")
    pipeline.configure(None, console=None)
    events = [r["event"] for r in _records(log_file)]
    assert events == ["stack.starting", "log.tap_failed"]
