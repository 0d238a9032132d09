"""`kill -9` of the daemon at seeded random points of a reload and of a switch, then a new
daemon: afterwards exactly one platform serves, nothing of the killed daemon is left running,
the stack is the one chosen, and the volume's data is intact.

The seed is printed on failure; DEVSUP_FAULT_SEED=N replays a run.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.faults.support import describe, kill_marked, mark_env, marked_processes
from tests.harness import DaemonProcess, FakeProject, private_env, wait_until

pytestmark = pytest.mark.faults

RUNS = 10
SEED = int(os.environ.get("DEVSUP_FAULT_SEED", "20261127"))


def _is_platform(proc: psutil.Process, needle: str) -> bool:
    """The platform process itself (not the `sh -c` a run string without exec leaves above it)."""
    cmdline = proc.cmdline()
    return any(needle in arg for arg in cmdline) and proc.name() != "sh"


def _platforms(mark: str, needle: str) -> list[psutil.Process]:
    return [p for p in marked_processes(mark) if _is_platform(p, needle)]


def _only_new_daemon_left(mark: str, daemon: DaemonProcess, needle: str, why: str) -> None:
    """Every marked process is the new daemon or its one platform (what the killed daemon was
    running - a compose call, a build - has ended or was stopped)."""
    assert daemon.proc is not None

    def clean() -> bool:
        others = [
            p
            for p in marked_processes(mark)
            if p.pid != daemon.proc.pid and needle not in " ".join(p.cmdline())  # type: ignore[union-attr]
        ]
        return not others and len(_platforms(mark, needle)) == 1

    try:
        wait_until(clean, timeout=20, what="only the new daemon and one platform")
    except AssertionError:
        raise AssertionError(f"{why}: left {describe(marked_processes(mark))}") from None


@pytest.fixture
def killable(fake_project: FakeProject) -> Iterator[tuple[FakeProject, dict[str, str], str]]:
    env = private_env()
    mark = mark_env(env)
    try:
        yield fake_project, env, mark
    finally:
        kill_marked(mark)


def test_kill9_at_random_points_of_a_reload(
    killable: tuple[FakeProject, dict[str, str], str],
) -> None:
    """10 times: save a change (slow build), kill -9 the daemon somewhere in detect, build,
    stop, start or ready, start a new daemon: one platform serving the newest source."""
    project, env, mark = killable
    (project.root / "build_delay").write_text("0.2")
    rng = random.Random(SEED)
    daemon = DaemonProcess(project.config, env=env, project=project.project).start()
    daemon.wait_platform("running")
    needle = "fakeplatform.py"
    for run in range(1, RUNS + 1):
        why = f"run {run}, seed {SEED}"
        version = f"v{run + 1}"
        project.set_source(version)
        time.sleep(rng.uniform(0.0, 0.6))  # detect 0-5 ms, build 200 ms, stop/start/ready ~100 ms
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()
        daemon = DaemonProcess(project.config, env=env, project=project.project).start()
        status = daemon.wait_platform("running")
        wait_until(lambda v=version: project.version() == v, what=f"{version} served ({why})")
        _only_new_daemon_left(mark, daemon, needle, why)
        assert status["platform"]["pid"] in {p.pid for p in _platforms(mark, needle)}, why
    daemon.stop()


def test_kill9_during_a_build_the_next_daemon_stops_the_build(
    killable: tuple[FakeProject, dict[str, str], str],
) -> None:
    """A daemon killed while a long build runs: no record names the build, but it carries the
    instance, so the next daemon stops it before its own build."""
    project, env, mark = killable
    daemon = DaemonProcess(project.config, env=env, project=project.project).start()
    daemon.wait_platform("running")
    (project.root / "build_delay").write_text("300")
    project.set_source("v2")
    daemon.wait_platform("building")
    wait_until(lambda: project.builds("started") == 2, what="the second build running")
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait()
    (project.root / "build_delay").write_text("0")
    daemon = DaemonProcess(project.config, env=env, project=project.project).start()
    daemon.wait_platform("running")
    wait_until(lambda: project.version() == "v2", what="v2 served")
    _only_new_daemon_left(mark, daemon, "fakeplatform.py", "after a kill during a build")
    found = [e for e in daemon.logs_of("devsup") if e["event"] == "platform.orphan_found"]
    assert any("fakebuild.sh" in e.get("command", "") for e in found), found
    daemon.stop()


# --- a switch, on the demo stack (Docker) -------------------------------------------------------

SKELETON = {"redpanda", "postgres"}
FULLSTACK = SKELETON | {"traefik", "emqx", "ai-inference"}


@pytest.mark.docker
def test_kill9_at_random_points_of_a_switch(demo_stack) -> None:  # type: ignore[no-untyped-def]
    """10 times: switch stacks, kill -9 the daemon somewhere in the switch, start a new one:
    it enters the stack the state file chose, exactly one platform serves, the services are
    that stack's, nothing of the killed daemon runs on, and the volume's data is intact."""
    config = json.loads(demo_stack.config.read_text())
    # Both stacks run the host binary: the switch is all compose (no image build per run).
    config["stacks"]["fullstack"]["platform"] = "binary"
    config["platform"]["binary"]["stop_timeout"] = 1
    demo_stack.config.write_text(json.dumps(config, indent=2))
    env = demo_stack.daemon.env
    mark = mark_env(env)
    rng = random.Random(SEED)
    state_file = Path(env["XDG_STATE_HOME"]) / "devsup" / f"{demo_stack.daemon.project}.json"
    daemon = demo_stack.daemon.start()
    try:
        daemon.wait_platform("running", timeout=120)
        wait_until(lambda: daemon.status()["state"] == "running", timeout=60, what="skeleton up")
        demo_stack.put("kept", "across kill -9")
        needle = "bin/platform"
        stack = "skeleton"
        for run in range(1, RUNS + 1):
            why = f"run {run}, seed {SEED}"
            target = "fullstack" if stack == "skeleton" else "skeleton"
            with daemon.client() as c:
                c.call("switch", {"stack": target, "wait": False})
            time.sleep(rng.uniform(0.0, 4.0))  # compose up, health waits, platform swap
            assert daemon.proc is not None
            daemon.proc.kill()
            daemon.proc.wait()
            chosen = json.loads(state_file.read_text())["stack"]
            assert chosen in (stack, target), why
            daemon = DaemonProcess(demo_stack.config, env=env, project=daemon.project).start()
            demo_stack.daemon = daemon
            wait_until(
                lambda d=daemon: (
                    (s := d.status())["state"] == "running" and s["platform"]["state"] == "running"
                ),
                timeout=90,
                what=f"the new daemon running ({why})",
            )
            assert daemon.status()["stack"] == chosen, why
            expected = FULLSTACK if chosen == "fullstack" else SKELETON
            wait_until(
                lambda: demo_stack.running_services() == expected,  # noqa: B023
                timeout=30,
                what=f"{chosen}'s services ({why})",
            )
            assert demo_stack.get("kept") == "across kill -9", why
            assert demo_stack.version() is not None, why
            _only_new_daemon_left(mark, daemon, needle, why)
            stack = chosen
    finally:
        demo_stack.daemon.stop()
        kill_marked(mark)
