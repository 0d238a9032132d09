"""Issue 9's defects, each reproduced on a real `devsup run` (not only at unit level): the state
file unwritable or garbage, a hung `docker compose`, a build that never ends, SIGHUP, and a
double-forked helper. Each ends with "nothing of the daemon's left running"."""

from __future__ import annotations

import json
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.conftest import Marked
from tests.faults.support import marked_processes, start_under, wait_none_marked
from tests.harness import FIXTURES, wait_until, write_atomic

pytestmark = pytest.mark.faults


def _state_path(m: Marked) -> Path:
    return Path(m.daemon.env["XDG_STATE_HOME"]) / "devsup" / f"{m.project.project}.json"


def _stop_cleanly(m: Marked) -> None:
    """`devsup stop` answers, the daemon exits 0, its socket and every process are gone."""
    result = m.daemon.cli("stop")
    assert result.returncode == 0, result.stderr
    assert m.daemon.proc is not None
    assert m.daemon.proc.wait(timeout=20) == 0, m.daemon.log_tail()
    assert not m.daemon.socket.exists()
    wait_none_marked(m.mark)


# --- 1. unwritable state file ---------------------------------------------------------------

READ_ONLY = 'mkdir -p "$D" && mount --bind "$D" "$D" && mount -o remount,ro,bind "$D" && exec "$@"'


@pytest.mark.parametrize("how", ["directory", "read-only"])
def test_unwritable_state_file_never_stops_supervision(marked: Marked, how: str) -> None:
    """A directory at the state file's path, or a read-only state directory: the platform runs,
    READY=1 is sent, status names the error, `devsup stop` stops and leaves nothing running."""
    path = _state_path(marked)
    if how == "directory":
        path.mkdir(parents=True)
        marked.daemon.start()
    else:
        # A private mount namespace: the read-only mount is the daemon's alone.
        marked.daemon.env["D"] = str(path.parent)
        start_under(
            marked.daemon,
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh"],
        )
    assert marked.notify.wait_for("READY=1"), marked.daemon.log_tail()
    status = marked.daemon.wait_platform("running")
    assert marked.project.version() == "v1"
    assert status["state"] == "running"
    error = status["state_error"]
    assert error is not None and str(path) in error, status
    assert ("Is a directory" if how == "directory" else "Read-only file system") in error
    # Supervision goes on: a change still builds and swaps.
    marked.project.set_source("v2")
    wait_until(lambda: marked.project.version() == "v2", what="v2 served")
    _stop_cleanly(marked)


def test_state_error_clears_once_the_file_can_be_written(marked: Marked) -> None:
    """The error is reported while the path is blocked and gone after the next good save."""
    path = _state_path(marked)
    path.mkdir(parents=True)
    marked.daemon.start()
    assert marked.daemon.wait_platform("running")["state_error"] is not None
    path.rmdir()
    marked.project.set_source("v2")  # the next state change saves again
    wait_until(lambda: marked.daemon.status()["state_error"] is None, what="state_error cleared")
    assert json.loads(path.read_text())["stack"] == "skeleton"
    _stop_cleanly(marked)


# --- 5. garbage state files -----------------------------------------------------------------

GARBAGE = {
    "negative pid": json.dumps({"stack": "skeleton", "platform_pid": -1}),
    "huge pid": json.dumps({"platform_pid": 2**70, "platform_create_time": 1.0}),
    "wrong types": json.dumps({"stack": 5, "platforms": "x", "builds": [1], "ports": {"A": "b"}}),
    "bad platform entries": json.dumps({"platforms": [{"pid": -5}, {"pid": "1"}, None, 7]}),
    "pid 1": json.dumps({"platforms": [{"pid": 1, "create_time": 0.0}]}),
    "truncated": '{"stack": "skeleton", "platforms": [{"pid": 4',
    "a list": "[1, 2, 3]",
    "binary junk": "\x00\xff\xfe garbage \x1b[31m",
    "NaN create time": '{"platform_pid": 1, "platform_create_time": NaN}',
}


@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_state_file_is_ignored_with_a_warning(marked: Marked, case: str) -> None:
    """Whatever is in the state file, the daemon starts, warns, and touches no stranger."""
    path = _state_path(marked)
    path.parent.mkdir(parents=True)
    path.write_text(GARBAGE[case], errors="surrogateescape")
    marked.daemon.start()
    assert marked.daemon.wait_platform("running")["state_error"] is None
    assert marked.project.version() == "v1"
    events = {e["event"] for e in marked.daemon.logs_of("devsup")}
    if case != "pid 1":  # well-formed; only its start time tells it is not our platform
        assert events & {"state.unreadable", "state.field_ignored"}, events
    assert "platform.orphan_found" not in events
    _stop_cleanly(marked)
    assert json.loads(path.read_text())["stack"] == "skeleton"  # rewritten whole


# --- 6. a hung `docker compose`, a build that never ends ------------------------------------

HANGING_DOCKER = """#!/bin/sh
sleep 300 &
wait
"""


def test_hung_compose_degrades_the_stack_and_the_host_binary_runs(
    marked: Marked, tmp_path: Path
) -> None:
    """Every compose call hangs: after compose.timeout the stack is degraded with the reason,
    the host binary serves, READY=1 is sent, `restart platform` works, and `stop` leaves no
    compose child."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(HANGING_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    compose_dir = tmp_path / "compose"
    compose_dir.mkdir()
    (compose_dir / "docker-compose.yaml").write_text("services: {}\n")
    env = marked.daemon.env
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    # No engine to reach either: this test needs no Docker at all.
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"
    marked.project.write_config(
        compose={"directory": str(compose_dir), "files": ["docker-compose.yaml"], "timeout": 1.5}
    )
    marked.daemon.start()
    assert marked.notify.wait_for("READY=1"), marked.daemon.log_tail()
    status = marked.daemon.wait_platform("running")
    assert status["state"] == "degraded"
    assert marked.project.version() == "v1"
    failed = marked.daemon.wait_event("stack.failed")[0]
    assert "timed out after 1.5s" in failed["reason"], failed
    restarted = marked.daemon.cli("restart", "platform")
    assert restarted.returncode == 0, restarted.stderr
    assert marked.project.version() == "v1"
    _stop_cleanly(marked)


def test_build_that_never_ends_is_a_failed_build(marked: Marked) -> None:
    """A build past `platform.build_timeout` is killed (its tree too) and is build_failed with
    the reason; the old platform keeps serving."""
    project = marked.project
    project.write_config()
    marked.daemon.start()
    marked.daemon.wait_platform("running")
    (project.root / "build_delay").write_text("300")
    project.write_config(
        platform={
            **json.loads(project.config.read_text())["platform"],
            "build_timeout": 1.5,
        }
    )
    marked.daemon.wait_event("config.reloaded")
    project.set_source("v2")
    status = marked.daemon.wait_platform("build_failed", timeout=20)
    assert "timed out after 1.5s" in status["platform"]["last_build"]["error"]
    assert project.version() == "v1"
    assert project.builds("started") >= 1
    # Only the platform (and the daemon) are left: the build's sleep is gone.
    assert marked.daemon.proc is not None
    expected = {marked.daemon.proc.pid, status["platform"]["pid"]}
    wait_until(
        lambda: {p.pid for p in marked_processes(marked.mark)} == expected,
        what="the build's processes gone",
    )
    _stop_cleanly(marked)


# --- 8. SIGHUP -------------------------------------------------------------------------------


def test_sighup_stops_a_foreground_run_cleanly(marked: Marked) -> None:
    """Closing the terminal of `devsup run` (SIGHUP) stops it like SIGTERM: exit 0, socket
    removed, no platform left."""
    marked.daemon.start()
    marked.daemon.wait_platform("running")
    assert marked.daemon.proc is not None
    marked.daemon.proc.send_signal(signal.SIGHUP)
    assert marked.daemon.proc.wait(timeout=15) == 0, marked.daemon.log_tail()
    assert not marked.daemon.socket.exists()
    assert marked.notify.wait_for("STOPPING=1", timeout=1)
    wait_none_marked(marked.mark)


# --- 9. double-forked helpers ------------------------------------------------------------------


def test_double_forked_helper_is_gone_after_stop(marked: Marked) -> None:
    """`(setsid cmd &)` in `run` leaves the platform's tree; devsup (the subreaper) still stops
    it with the platform."""
    helper = f"{sys.executable} {FIXTURES / 'sleeper.py'}"
    platform = f"{sys.executable} {FIXTURES / 'fakeplatform.py'}"
    marked.project.run = f"(setsid {helper} &); exec {platform}"
    marked.project.write_config()
    marked.daemon.start()
    marked.daemon.wait_platform("running")

    assert marked.daemon.proc is not None
    daemon_pid = marked.daemon.proc.pid

    def helper_reparented() -> bool:
        return any(
            "sleeper.py" in " ".join(p.cmdline()) and p.ppid() == daemon_pid
            for p in marked_processes(marked.mark)
        )

    wait_until(helper_reparented, what="the helper re-parented to devsup")
    _stop_cleanly(marked)


# --- 3. hostile config on a live reload --------------------------------------------------------

# Time from the save to `status.config_error`, measured below; well under a second is the goal.
CONFIG_INVALID_WITHIN = 1.0


def _alias_bomb(levels: int = 9) -> str:
    lines = ["project: bomb", 'x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, levels):
        lines.append(f"x{n}: &x{n} [" + ",".join([f"*x{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb": (_alias_bomb(), "alias"),
    "deep nesting": ("[" * 5000 + "]" * 5000 + "\n", "deep"),
    "oversized": ("project: x\n" + "# padding\n" * 120_000, "size limit"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_config_edit_is_config_invalid_at_once(marked: Marked, case: str) -> None:
    """An alias bomb, 5,000-deep nesting or a 1 MB file saved over the running config:
    `config.invalid` with one line naming the limit, in well under a second, memory bounded,
    status small; the running platform stays and a good edit is applied again."""
    text, word = HOSTILE[case]
    daemon = marked.daemon
    daemon.start()
    pid = daemon.wait_platform("running")["platform"]["pid"]
    assert daemon.proc is not None
    good = marked.project.config.read_text()
    write_atomic(marked.project.config, text)
    saved = time.monotonic()
    status = wait_until(lambda: (s := daemon.status())["config_error"] and s, timeout=10)
    took = time.monotonic() - saved
    error = status["config_error"]
    assert "\n" not in error and word in error.lower(), error
    assert took < CONFIG_INVALID_WITHIN, f"config.invalid after {took:.3f}s"
    assert status["platform"]["pid"] == pid and marked.project.version() == "v1"
    rss = psutil.Process(daemon.proc.pid).memory_info().rss
    assert rss < 150 * 2**20, f"daemon RSS {rss / 2**20:.0f} MB"
    with daemon.client() as c:
        reply = c.call("status")
    size = len(json.dumps(reply))
    assert size < 64 * 1024
    print(f"{case}: config.invalid after {took * 1000:.0f} ms, RSS {rss >> 20} MB, status {size} B")
    write_atomic(marked.project.config, good.replace('"stop_timeout": 2', '"stop_timeout": 3'))
    wait_until(lambda: daemon.status()["config_error"] is None, what="error cleared")
    _stop_cleanly(marked)


# --- 4. an unparsable `run` arrives by live reload ---------------------------------------------


def test_unbalanced_quote_by_live_reload_leaves_nothing_untracked(marked: Marked) -> None:
    """A `run` with an unbalanced quote saved over a running config: the old platform is
    stopped, sh's syntax error is the new one's exit, the daemon keeps answering and `stop`
    leaves nothing."""
    daemon = marked.daemon
    daemon.start()
    old = daemon.wait_platform("running")["platform"]["pid"]
    marked.project.run = "exec ./bin/platform 'oops"
    marked.project.write_config()
    exited = daemon.wait_event("platform.exited")[0]
    assert exited["exit_code"] == 2
    wait_until(lambda: not psutil.pid_exists(old), what="the old platform stopped")
    assert daemon.status()["config_error"] is None
    _stop_cleanly(marked)


# --- 11. a symlinked config ---------------------------------------------------------------------


def test_symlinked_config_is_live_reloaded_through_its_target(
    marked: Marked, tmp_path: Path
) -> None:
    """`devsup.yaml` is a symlink to a file elsewhere: editing the target is a live reload."""
    project = marked.project
    elsewhere = tmp_path / "dotfiles"
    elsewhere.mkdir()
    target = elsewhere / "real.yaml"
    target.write_text(project.config.read_text())
    project.config.unlink()
    project.config.symlink_to(target)
    daemon = marked.daemon
    daemon.start()
    daemon.wait_platform("running")
    write_atomic(target, target.read_text().replace('"stop_timeout": 2', '"stop_timeout": 3'))
    reloaded = daemon.wait_event("config.reloaded", timeout=10)[0]
    assert "platform" in reloaded["changed"]
    _stop_cleanly(marked)
