"""Real tier: the Docker engine goes away under a running daemon and comes back.

The engine stopped and started here is a private `dockerd` this test starts (`PrivateDockerd`),
never the system one: the daemon reaches it through DOCKER_HOST (compose and the SDK both honour
it). The stack is the demo's base services (stand-ins, loaded from the system engine with
`docker save`, nothing pulled) with the fake host-binary platform, which needs no Docker and must
keep serving while the engine is down.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_env import DEMO_STACK, STANDIN_IMAGE, demo_images, free_port, run, unique_project
from tests.harness import DaemonProcess, FakeProject, http_get, private_env, wait_until
from tests.private_dockerd import PrivateDockerd

# Every test here drives the real Docker engine and compose CLI.
pytestmark = pytest.mark.docker

__all__ = ["demo_images"]  # fixture used by name

SERVICES = {"postgres", "redpanda"}
# Stand-ins are healthy ~1-2 s after start (1 s healthcheck interval); generous for a loaded box.
UP_DEADLINE = 40.0
# The events thread notices a closed stream at once; reconnect backoff tops out at 10 s.
LOST_DEADLINE = 20.0
BACK_DEADLINE = 40.0


def _missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "a private dockerd needs root (this test starts and stops its own engine)"
    for tool in ("dockerd", "docker", "umount", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH (run scripts/prereqs)"
    return None


@pytest.fixture
def engine(demo_images: None) -> Iterator[PrivateDockerd]:
    """A private dockerd holding the stand-in image; stopped and wiped after the test."""
    problem = _missing_tools()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    dockerd = PrivateDockerd(Path(tempfile.mkdtemp(prefix="dk", dir="/tmp")))
    try:
        try:
            dockerd.start()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        image = dockerd.root / "standin.tar"
        saved = run(["docker", "save", "-o", str(image), STANDIN_IMAGE])
        if saved.returncode != 0:
            pytest.fail(f"docker save {STANDIN_IMAGE} failed: {saved.stderr}", pytrace=False)
        loaded = dockerd.docker("load", "-i", str(image))
        if loaded.returncode != 0:
            pytest.fail(
                f"loading {STANDIN_IMAGE} into the private engine failed: {loaded.stderr}",
                pytrace=False,
            )
        image.unlink()
        yield dockerd
    finally:
        dockerd.remove()


@pytest.fixture
def stack(engine: PrivateDockerd, tmp_path: Path) -> Iterator[tuple[DaemonProcess, FakeProject]]:
    """A daemon (not started) on the base services and the fake platform, via the private engine."""
    project = FakeProject(tmp_path / "proj", project=unique_project("dr"))
    project.write_config(
        compose={"directory": str(DEMO_STACK), "files": ["docker-compose.yaml"]},
        stacks={"skeleton": {"platform": "binary"}},
    )
    env = {
        **private_env(),
        "DOCKER_HOST": engine.host,
        "DEMO_REDPANDA_PORT": str(free_port()),
        "DEMO_POSTGRES_PORT": str(free_port()),
    }
    env.pop("DOCKER_CONTEXT", None)
    daemon = DaemonProcess(project.config, env=env, project=project.project)
    try:
        yield daemon, project
    finally:
        daemon.stop()
        if not engine.is_running():
            engine.start()  # only a running engine can remove its containers and networks
        engine.remove_project(project.project)


def _healthy_status(daemon: DaemonProcess) -> dict[str, Any] | None:
    """The status when the whole stack is up and healthy with Docker available, else None."""
    status = daemon.status()
    services = {s["name"]: s for s in status["services"]}
    healthy = (
        status["docker"]["available"] is True
        and status["state"] == "running"
        and set(services) == SERVICES
        and all(s["state"] == "running" and s["health"] == "healthy" for s in services.values())
    )
    return status if healthy else None


def test_engine_stop_and_start_leads_to_reconnect_and_reconcile(
    engine: PrivateDockerd, stack: tuple[DaemonProcess, FakeProject]
) -> None:
    """The daemon outlives a stopped engine (host platform serving), reconciles once it is back."""
    daemon, project = stack
    daemon.start()
    try:
        up = wait_until(
            lambda: _healthy_status(daemon),
            UP_DEADLINE,
            "base services running and healthy with docker available",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.log_tail()}") from None
    platform_pid = up["platform"]["pid"]
    containers = {s["name"]: s["container"] for s in up["services"]}
    assert up["platform"]["state"] == "running" and platform_pid
    postgres_url = f"http://127.0.0.1:{daemon.env['DEMO_POSTGRES_PORT']}/healthz"
    # Published inside the engine's network namespace, so reachable only from in there.
    assert http_get(postgres_url) is None, "a port of the private engine is open on the host"
    assert engine.netns.http_get(postgres_url) == "ok", "published port of the private engine"

    started = time.monotonic()
    engine.stop()
    stopped_in = time.monotonic() - started
    assert not engine.answers()

    lost = wait_until(
        lambda: (s := daemon.status())["docker"]["available"] is False and s,
        LOST_DEADLINE,
        "status docker.available false",
    )
    assert daemon.event_names().count("docker.lost") >= 1
    error = lost["docker"]["error"]
    assert isinstance(error, str) and error.strip(), f"no error sentence: {lost['docker']}"
    assert daemon.proc is not None and daemon.proc.poll() is None, "daemon exited with the engine"
    assert lost["platform"]["state"] == "running"
    assert lost["platform"]["pid"] == platform_pid
    assert http_get(project.url + "/healthz") == "ok", "host platform stopped serving"
    assert lost["state"] == "degraded"
    # The engine stopped them on its way down: not "stopped on purpose".
    assert {s["reason"] for s in lost["services"]} == {"docker engine unavailable"}

    restarted = time.monotonic()
    engine.start()
    try:
        reconciled = daemon.wait_event("stack.reconciled", timeout=BACK_DEADLINE)[-1]
        back = wait_until(
            lambda: _healthy_status(daemon),
            UP_DEADLINE,
            "services running and healthy again after the engine came back",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {daemon.status()}\n{daemon.log_tail()}") from None
    reconciled_in = time.monotonic() - restarted
    names = daemon.event_names()
    lost_at = names.index("docker.lost")
    assert "docker.back" in names[lost_at:], names[lost_at:]
    assert names.index("docker.back", lost_at) < names.index("stack.reconciled", lost_at)
    assert reconciled.get("ok") is True, reconciled
    assert back["docker"] == {"available": True, "error": None} and back["state"] == "running"
    assert back["platform"]["pid"] == platform_pid, "the host platform was restarted"
    # The engine stopped the containers on its way down; reconcile starts them, not new ones.
    assert {s["name"]: s["container"] for s in back["services"]} == containers
    assert engine.netns.http_get(postgres_url) == "ok", "reconciled service not on its port"
    print(f"engine stopped in {stopped_in:.1f}s; stack reconciled {reconciled_in:.1f}s after start")
