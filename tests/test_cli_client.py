"""Client commands as users run them: the real `devsup` console script against a fake daemon
(the real ControlServer with canned answers, tests/fixtures/fake_daemon.py) in another process.

Covers what the client imports (it must start fast), how it finds the daemon from a config with
errors, what it prints (daemon text escaped on terminals), and how a stream ends.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
DEVSUP = str(Path(sys.executable).parent / "devsup")
PROJECT = "fake"
# What a client command must not import: each costs tens of ms, and none is needed to talk to a
# socket (issue 8, "Fast CLI").
HEAVY = {"asyncio", "yaml", "structlog", "docker", "psutil", "watchdog", "pathspec"}
# A config mid-edit: the YAML is broken below the project line.
BROKEN_CONFIG = f"project: {PROJECT}\nstacks:\n  skeleton: {{platform: binary\n  - [\n"


class FakeDaemon:
    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        self.env.pop("DEVSUP_CONFIG", None)
        self.socket = runtime / "devsup" / f"{PROJECT}.sock"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> FakeDaemon:
        self.proc = subprocess.Popen(
            [sys.executable, str(FIXTURES / "fake_daemon.py"), str(self.socket)],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert read_line(self.proc.stdout.fileno(), 10) == "ready"
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def devsup(
        self, *args: str, cwd: Path, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DEVSUP, *args],
            cwd=cwd,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


def read_line(fd: int, timeout: float) -> str:
    """One line from a pipe or pty, waiting at most `timeout` seconds for it."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no line within {timeout}s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode().rstrip("\r\n")


@pytest.fixture
def fake_daemon() -> Iterator[FakeDaemon]:
    runtime = Path(tempfile.mkdtemp(prefix="dsc", dir="/tmp"))
    daemon = FakeDaemon(runtime).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory whose ./devsup.yaml names the fake project and is otherwise broken."""
    (tmp_path / "devsup.yaml").write_text(BROKEN_CONFIG)
    return tmp_path


# --- start-up cost -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("status",),
        ("status", "--json"),
        ("pause",),
        ("events",),
        ("logs", "-n", "5"),
        ("status", "--project", PROJECT),
        ("ls",),
    ],
)
def test_client_commands_import_nothing_heavy(
    fake_daemon: FakeDaemon, checkout: Path, argv: tuple[str, ...]
) -> None:
    """`devsup status` (and the other client commands) load no asyncio, YAML, structlog or
    docker, even when they read the config to find the daemon."""
    done = fake_daemon.devsup(*argv, cwd=checkout, extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "devsupervisor.control.client" in imported  # the profile covers the client
    assert {name.split(".")[0] for name in imported} & HEAVY == set()


def test_status_found_through_a_broken_config(fake_daemon: FakeDaemon, checkout: Path) -> None:
    """A config with a YAML error below `project:` still leads `devsup status` to the daemon."""
    done = fake_daemon.devsup("status", cwd=checkout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("project  fake   stack skeleton (running)")


def test_bad_instance_name_is_a_usage_error(fake_daemon: FakeDaemon, checkout: Path) -> None:
    """`--instance` becomes a file name: a path in it is refused with exit 2."""
    done = fake_daemon.devsup("status", "--instance", "../x", cwd=checkout)
    assert done.returncode == 2
    assert "not an instance name" in done.stderr


# --- what reaches the terminal -------------------------------------------------------------------


def test_status_screen_escapes_what_the_daemon_sent(
    fake_daemon: FakeDaemon, checkout: Path
) -> None:
    """Escape sequences in the status object are shown as text, never sent to the terminal."""
    done = fake_daemon.devsup("status", cwd=checkout)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert "\x07" not in done.stdout
    assert "restarted \\x1b]0;pwned\\x07\\x1b[2J" in done.stdout
    assert "    \\x1b]0;pwned\\x07\\x1b[2Jboom" in done.stdout  # the build error's last line
    assert "state    ERROR: cannot write state file /x: Read-only file system \\x1b" in done.stdout
    assert "ui       http://127.0.0.1:8123/" in done.stdout
    as_json = fake_daemon.devsup("status", "--json", cwd=checkout)
    assert "\x1b" not in as_json.stdout
    assert "\\u001b]0;pwned" in as_json.stdout


def test_error_message_from_the_daemon_is_escaped(fake_daemon: FakeDaemon, checkout: Path) -> None:
    """An error reply's message reaches stderr escaped, with exit 1."""
    done = fake_daemon.devsup("restart", "platform", cwd=checkout)
    assert done.returncode == 1
    assert "\x1b" not in done.stderr
    assert "devsup: failed: it failed \\x1b]0;pwned\\x07" in done.stderr


def test_log_lines_are_escaped_on_a_terminal_and_raw_in_a_pipe(
    fake_daemon: FakeDaemon, checkout: Path
) -> None:
    """`devsup logs` keeps the platform's bytes for a file or pipe, and escapes them on a tty."""
    piped = fake_daemon.devsup("logs", cwd=checkout)
    assert piped.returncode == 0, piped.stderr
    assert "evil \x1b]0;pwned\x07\x1b[2J line" in piped.stdout

    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [DEVSUP, "logs"], cwd=checkout, env=fake_daemon.env, stdout=terminal, stderr=terminal
        )
        os.close(terminal)
        lines = [read_line(controller, 10), read_line(controller, 10)]
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(controller)
    assert lines[0].endswith("platform | plain line")
    assert lines[1].endswith("platform | evil \\x1b]0;pwned\\x07\\x1b[2J line")


# --- how a stream ends -------------------------------------------------------------------------


def follow_events(daemon: FakeDaemon, cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [DEVSUP, "events", "-f"],
        cwd=cwd,
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert '"event": "tick"' in read_line(proc.stdout.fileno(), 10)
    return proc


def test_daemon_killed_mid_stream_is_exit_3(fake_daemon: FakeDaemon, checkout: Path) -> None:
    """`events -f` whose daemon dies (kill -9) ends with exit 3 and a sentence, not exit 0."""
    proc = follow_events(fake_daemon, checkout)
    assert fake_daemon.proc is not None
    fake_daemon.proc.kill()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 3
    assert "went away in the middle of `events`" in err


def test_daemon_stopping_ends_the_stream_cleanly(fake_daemon: FakeDaemon, checkout: Path) -> None:
    """`events -f` whose daemon stops (SIGTERM, streams closed with a final reply) exits 0."""
    proc = follow_events(fake_daemon, checkout)
    assert fake_daemon.proc is not None
    fake_daemon.proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert fake_daemon.proc.wait(timeout=10) == 0


def test_stream_ended_by_the_daemon_exits_0(fake_daemon: FakeDaemon, checkout: Path) -> None:
    """A follow stream the daemon finishes (its source ended) prints everything and exits 0."""
    done = fake_daemon.devsup("logs", "-f", cwd=checkout)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
