"""The Docker side failing under a running daemon: the compose CLI missing (no `docker` at all,
or a `docker` without the compose plugin), and the engine killed in the middle of a switch (a
private dockerd in a network namespace of its own: the machine's engine is never touched)."""

from __future__ import annotations

import json
import shutil
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.docker_env import DEMO_STACK, free_port, unique_project
from tests.faults.conftest import Marked
from tests.faults.support import kill_marked, mark_env, wait_none_marked
from tests.harness import DaemonProcess, FakeProject, private_env, wait_until
from tests.private_dockerd import PrivateDockerd
from tests.test_docker_restart import engine

pytestmark = pytest.mark.faults

__all__ = ["engine"]  # fixture used by name

# What the build and platform of the fake project need on PATH, without docker.
TOOLS = ("sh", "grep", "cat", "sleep", "mkdir", "dirname", "cp", "mv", "env")
NO_PLUGIN = """#!/bin/sh
if [ "$1" = compose ]; then
  echo "docker: 'compose' is not a docker command." >&2
  echo "See 'docker --help'" >&2
  exit 1
fi
exec {docker} "$@"
"""


def _compose_stack(m: Marked, tmp_path: Path) -> None:
    compose_dir = tmp_path / "compose"
    compose_dir.mkdir()
    (compose_dir / "docker-compose.yaml").write_text("services:\n  db:\n    image: x\n")
    m.project.write_config(
        compose={"directory": str(compose_dir), "files": ["docker-compose.yaml"]}
    )
    # No engine either: the point is the CLI, and nothing here needs Docker.
    m.daemon.env["DOCKER_HOST"] = f"unix://{tmp_path}/no-engine.sock"


@pytest.mark.parametrize("how", ["no docker", "no compose plugin"])
def test_compose_cli_missing_is_a_clear_error_and_the_host_binary_runs(
    marked: Marked, tmp_path: Path, how: str
) -> None:
    """Without `docker` (or without its compose plugin) the stack is degraded with a sentence
    naming that, the host binary serves, READY=1 is sent, and stop leaves nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    if how == "no compose plugin":
        docker = bin_dir / "docker"
        docker.write_text(NO_PLUGIN.format(docker=shutil.which("docker") or "/usr/bin/docker"))
        docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    _compose_stack(marked, tmp_path)
    marked.daemon.env["PATH"] = str(bin_dir)
    marked.daemon.start()
    assert marked.notify.wait_for("READY=1"), marked.daemon.log_tail()
    status = marked.daemon.wait_platform("running")
    assert status["state"] == "degraded"
    assert marked.project.version() == "v1"
    reason = marked.daemon.wait_event("stack.failed")[0]["reason"]
    expected = "cannot run docker" if how == "no docker" else "compose plugin is not installed"
    assert expected in reason and "\n" not in reason, reason
    result = marked.daemon.cli("stop")
    assert result.returncode == 0, result.stderr
    assert marked.daemon.proc is not None and marked.daemon.proc.wait(timeout=20) == 0
    wait_none_marked(marked.mark)


# --- the engine killed during a switch ----------------------------------------------------------

SKELETON = {"postgres", "redpanda"}
FULLSTACK = SKELETON | {"traefik", "emqx", "ai-inference"}
# Stand-ins are healthy 1-2 s after start; an engine restart and reconcile take longer.
UP_DEADLINE = 60.0
PUT = """
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="PUT")
urllib.request.urlopen(req, timeout=5)
"""


@pytest.fixture
def switching(
    engine: PrivateDockerd, tmp_path: Path
) -> Iterator[tuple[DaemonProcess, FakeProject, str]]:
    """A daemon (not started) with two binary stacks of the demo's stand-ins on the private
    engine; its processes carry a mark; everything removed after."""
    project = FakeProject(tmp_path / "proj", project=unique_project("ek"))
    project.write_config(
        compose={"directory": str(DEMO_STACK), "files": ["docker-compose.yaml"]},
        stacks={
            "skeleton": {"files": ["docker-compose.monolith.yaml"], "platform": "binary"},
            "fullstack": {
                "files": ["docker-compose.monolith.yaml", "docker-compose.fullstack.yaml"],
                "profiles": ["fullstack"],
                "platform": "binary",
            },
        },
    )
    env = {**private_env(), "DOCKER_HOST": engine.host}
    env.pop("DOCKER_CONTEXT", None)
    for service in ("REDPANDA", "POSTGRES", "TRAEFIK", "EMQX", "AI_INFERENCE"):
        env[f"DEMO_{service}_PORT"] = str(free_port())
    mark = mark_env(env)
    daemon = DaemonProcess(project.config, env=env, project=project.project)
    try:
        yield daemon, project, mark
    finally:
        daemon.stop()
        kill_marked(mark)
        if not engine.is_running():
            engine.start()
        engine.remove_project(project.project)


def _services(daemon: DaemonProcess) -> dict[str, dict]:  # type: ignore[type-arg]
    return {s["name"]: s for s in daemon.status()["services"]}


def _up(daemon: DaemonProcess, stack: str, names: set[str]) -> bool:
    status = daemon.status()
    services = {s["name"]: s for s in status["services"]}
    return (
        status["stack"] == stack
        and status["state"] == "running"
        and set(services) == names
        and all(s["state"] == "running" and s["health"] == "healthy" for s in services.values())
    )


@pytest.mark.docker
def test_engine_killed_during_a_switch(
    engine: PrivateDockerd, switching: tuple[DaemonProcess, FakeProject, str]
) -> None:
    """SIGKILL to every process of the engine while a switch brings services up: the daemon
    answers, the host platform keeps serving, the stack is degraded with the reason; once the
    engine is back the chosen stack comes up, the volume's data is intact, and stop leaves
    nothing."""
    daemon, project, mark = switching
    daemon.start()
    wait_until(lambda: _up(daemon, "skeleton", SKELETON), UP_DEADLINE, "skeleton up")
    data = f"http://127.0.0.1:{daemon.env['DEMO_POSTGRES_PORT']}/data/kept"
    put = engine.netns.run([sys.executable, "-c", PUT, data, "through the crash"])
    assert put.returncode == 0, put.stderr
    with daemon.client() as c:
        c.call("switch", {"stack": "fullstack", "wait": False})
    daemon.wait_event("stack.switching", timeout=10)
    for proc in engine.own_processes():  # dockerd, containerd, shims: the engine crashes
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(engine.own_processes(), timeout=10)
    assert engine.proc is not None
    engine.proc.wait(timeout=10)
    # A killed containerd may linger as a zombie (PID 1 here reaps late), and dockerd waits for
    # a pid in its pid file to go away: remove the stale file, as after a host crash.
    (engine.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)
    lost = wait_until(
        lambda: (s := daemon.status())["docker"]["available"] is False and s,
        30,
        "docker unavailable in status",
    )
    # The switch goes on to the platform (a host binary needs no engine): it may restart it for
    # the new stack, and then it serves.
    wait_until(lambda: project.version() == "v1", 30, "the host platform serving")
    assert lost["stack"] == "fullstack"
    wait_until(lambda: daemon.status()["state"] == "degraded", 30, "stack degraded")
    engine.start()
    try:
        wait_until(lambda: _up(daemon, "fullstack", FULLSTACK), UP_DEADLINE, "fullstack up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.status()}\n{daemon.log_tail()}") from None
    assert engine.netns.http_get(data) == "through the crash"
    # The switch itself restarts the platform for the new stack; it serves throughout after.
    assert daemon.status()["platform"]["state"] == "running" and project.version() == "v1"
    result = daemon.cli("stop")
    assert result.returncode == 0, result.stderr
    assert daemon.proc is not None and daemon.proc.wait(timeout=30) == 0
    wait_none_marked(mark)
    assert (
        json.loads(
            (Path(daemon.env["XDG_STATE_HOME"]) / "devsup" / f"{project.project}.json").read_text()
        )["stack"]
        == "fullstack"
    )
