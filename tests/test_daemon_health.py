"""Dependency supervision through the whole daemon, on the real engine: an unhealthy stand-in is
restarted, a manual stop stays stopped, `devsup restart NAME`, and adoption after `kill -9`."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.docker_env import run
from tests.harness import DaemonProcess, wait_until
from tests.stack_env import DemoStack

# Every test here drives the real Docker engine and compose CLI.
pytestmark = pytest.mark.docker


def _service(d: DaemonProcess, name: str) -> dict:
    return next(s for s in d.status()["services"] if s["name"] == name)


def test_unhealthy_dependency_is_restarted_and_manual_stop_stays(demo_stack: DemoStack) -> None:
    """POST /fail on postgres: devsup restarts it and it is healthy again; `docker stop` on
    redpanda: it stays stopped and status says so."""
    d = demo_stack.daemon.start()
    d.wait_platform("running", timeout=120)
    wait_until(
        lambda: _service(d, "postgres")["health"] == "healthy",
        timeout=30,
        what="postgres healthy in status",
    )
    before = demo_stack.compose.container_id("postgres")
    req = urllib.request.Request(demo_stack.url("postgres") + "/fail", method="POST")
    urllib.request.urlopen(req, timeout=5).close()
    d.wait_event("service.unhealthy", timeout=30)
    d.wait_event("service.restarted", timeout=30)
    entry = wait_until(
        lambda: (s := _service(d, "postgres"))["health"] == "healthy" and s["restarts"] == 1 and s,
        timeout=60,
        what="postgres healthy again after the restart",
    )
    assert entry["state"] == "running" and entry["reason"]
    assert demo_stack.compose.container_id("postgres") == before  # restarted, not recreated

    run(["docker", "stop", demo_stack.compose.container_id("redpanda")], timeout=60)
    wait_until(
        lambda: _service(d, "redpanda")["state"] == "stopped",
        timeout=30,
        what="redpanda shown stopped",
    )
    assert d.event_names().count("service.restarted") == 1
    assert d.cli("restart", "redpanda").returncode == 0
    wait_until(
        lambda: _service(d, "redpanda")["state"] == "running",
        timeout=60,
        what="redpanda running after devsup restart",
    )


def test_kill9_then_new_daemon_adopts_the_running_stack(demo_stack: DemoStack) -> None:
    """`kill -9` of the daemon in fullstack, then a new `devsup run`: every container keeps its
    id (nothing recreated), and supervision resumes."""
    d = demo_stack.daemon.start("--stack", "fullstack")
    d.wait_platform("running", timeout=180)
    names = ("redpanda", "postgres", "traefik", "emqx", "ai-inference", "platform")
    ids = {s: demo_stack.compose.container_id(s) for s in names}
    assert d.proc is not None
    d.proc.kill()
    d.proc.wait()
    again = DaemonProcess(d.config, env=d.env, project=d.project).start()
    try:
        again.wait_platform("running", timeout=120)
        assert {s: demo_stack.compose.container_id(s) for s in names} == ids
        assert again.status()["stack"] == "fullstack"
        assert "build.started" not in again.event_names()  # sources unchanged: no rebuild
        demo_stack.edit_version("v2")
        wait_until(lambda: demo_stack.version() == "v2", timeout=120, what="v2 after adoption")
    finally:
        again.stop()


def test_restart_on_restarts_the_platform_after_its_dependency(demo_stack: DemoStack) -> None:
    """With `platform.restart_on: [postgres]`, devsup's restart of an unhealthy postgres is
    followed by a restart of the host platform (new pid)."""
    config = json.loads(demo_stack.config.read_text())
    config["platform"]["restart_on"] = ["postgres"]
    demo_stack.config.write_text(json.dumps(config))
    d = demo_stack.daemon.start()
    pid = d.wait_platform("running", timeout=120)["platform"]["pid"]
    wait_until(
        lambda: _service(d, "postgres")["health"] == "healthy", timeout=30, what="postgres healthy"
    )
    req = urllib.request.Request(demo_stack.url("postgres") + "/fail", method="POST")
    urllib.request.urlopen(req, timeout=5).close()
    d.wait_event("platform.restart_for_dependency", timeout=60)
    wait_until(
        lambda: (
            (s := d.status())["platform"]["pid"] not in (None, pid)
            and s["platform"]["state"] == "running"
        ),
        timeout=60,
        what="platform restarted after postgres",
    )
    assert demo_stack.version() == "v1"
