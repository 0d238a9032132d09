"""Compose stacks on the real engine: bring-up, switching both ways, container-mode rebuilds."""

from __future__ import annotations

import pytest

from tests.harness import DaemonProcess, wait_until
from tests.stack_env import DemoStack

# Every test here drives the real Docker engine and compose CLI.
pytestmark = pytest.mark.docker

BASE = {"redpanda", "postgres"}
FULLSTACK_ONLY = {"traefik", "emqx", "ai-inference"}


def test_switch_both_ways_applies_only_the_difference(demo_stack: DemoStack) -> None:
    """skeleton -> fullstack -> skeleton: base containers keep their ids and postgres data
    survives; fullstack services come and go; the platform moves host binary <-> container."""
    d = demo_stack.daemon.start()
    d.wait_platform("running", timeout=120)
    assert demo_stack.running_services() == BASE
    assert demo_stack.version() == "v1"
    base_ids = {s: demo_stack.compose.container_id(s) for s in BASE}
    binary_pid = d.status()["platform"]["pid"]
    demo_stack.put("greeting", "hello")

    result = d.cli("switch", "fullstack", timeout=300)
    assert result.returncode == 0, result.stderr
    # Not a TTY: progress as plain lines, services coming up first, then the platform.
    assert "stack.starting" in result.stdout and "platform.ready" in result.stdout
    assert "\r" not in result.stdout
    status = d.status()
    assert status["stack"] == "fullstack" and status["state"] == "running"
    assert status["platform"]["mode"] == "container" and status["platform"]["pid"] is None
    assert demo_stack.running_services() == BASE | FULLSTACK_ONLY | {"platform"}
    assert {s: demo_stack.compose.container_id(s) for s in BASE} == base_ids
    assert demo_stack.version() == "v1"
    assert status["platform"]["container"] == demo_stack.compose.container_id("platform")
    wait_until(lambda: not _alive(binary_pid), what="host binary stopped")

    result = d.cli("switch", "skeleton", timeout=300)
    assert result.returncode == 0, result.stderr
    assert demo_stack.running_services() == BASE
    assert demo_stack.compose.container_id("traefik") == ""
    assert {s: demo_stack.compose.container_id(s) for s in BASE} == base_ids
    assert d.status()["platform"]["mode"] == "binary" and demo_stack.version() == "v1"
    assert demo_stack.get("greeting") == "hello"
    names = d.event_names()
    assert names.count("stack.switching") == 2 and names.count("stack.switched") == 2


def test_container_rebuild_and_failed_build(demo_stack: DemoStack) -> None:
    """In container mode an edit rebuilds the image and recreates only the platform; a failed
    build leaves the old container serving and status says build_failed."""
    d = demo_stack.daemon.start("--stack", "fullstack")
    d.wait_platform("running", timeout=180)
    assert demo_stack.version() == "v1"
    first = demo_stack.compose.container_id("platform")
    others = {s: demo_stack.compose.container_id(s) for s in BASE | FULLSTACK_ONLY}

    demo_stack.edit_version("v2")
    wait_until(lambda: demo_stack.version() == "v2", timeout=120, what="v2 served")
    second = demo_stack.compose.container_id("platform")
    assert second != first
    assert {s: demo_stack.compose.container_id(s) for s in BASE | FULLSTACK_ONLY} == others

    main = demo_stack.sources / "cmd" / "main.go"
    main.write_text(main.read_text() + "\nthis is not go\n")
    status = d.wait_platform("build_failed", timeout=120)
    assert status["platform"]["last_build"]["error"]
    assert demo_stack.compose.container_id("platform") == second
    assert demo_stack.version() == "v2"


def test_stack_is_remembered_and_stop_down_keeps_volumes(demo_stack: DemoStack) -> None:
    """The chosen stack survives a daemon restart; `stop --down` removes containers, never
    the postgres volume's data."""
    d = demo_stack.daemon.start()
    d.wait_platform("running", timeout=120)
    demo_stack.put("k", "kept")
    assert d.cli("switch", "fullstack", timeout=300).returncode == 0
    assert d.cli("stop").returncode == 0
    assert d.proc is not None and d.proc.wait(timeout=30) == 0

    again = DaemonProcess(d.config, env=d.env, project=d.project).start()
    try:
        again.wait_platform("running", timeout=120)
        assert again.status()["stack"] == "fullstack"
        assert again.cli("stop", "--down").returncode == 0
        assert again.proc is not None and again.proc.wait(timeout=60) == 0
    finally:
        again.stop()
    assert demo_stack.running_services() == set()

    third = DaemonProcess(d.config, env=d.env, project=d.project).start()
    try:
        third.wait_platform("running", timeout=180)
        assert demo_stack.get("k") == "kept"
    finally:
        third.stop()


def test_failed_switch_is_degraded_and_tears_nothing_down(demo_stack: DemoStack) -> None:
    """A fullstack service that never turns healthy: the switch fails with exit 1, the stack
    is degraded with the reason, and the base services and host binary keep running."""
    demo_stack.daemon.env["DEMO_EMQX_FAIL_HEALTH"] = "1"
    d = demo_stack.daemon.start()
    d.wait_platform("running", timeout=120)
    pid = d.status()["platform"]["pid"]
    result = d.cli("switch", "fullstack", timeout=300)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "emqx" in result.stderr or "fullstack" in result.stderr
    status = d.status()
    assert status["state"] == "degraded"
    assert "stack.failed" in d.event_names()
    assert status["platform"]["pid"] == pid and demo_stack.version() == "v1"
    assert demo_stack.running_services() >= BASE


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
