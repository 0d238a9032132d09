"""Live reloads: config edits apply without a restart; invalid edits are reported and ignored;
compose file edits recreate only the services whose definition changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.docker_env import DEMO_STACK
from tests.harness import DaemonProcess, FakeProject, wait_until, write_atomic
from tests.stack_env import DemoStack, write_config


def test_valid_config_edit_restarts_only_the_platform(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """Changing the platform's env applies live: config.reloaded, a new platform pid."""
    daemon.start()
    pid = daemon.wait_platform("running")["platform"]["pid"]
    daemon_pid = daemon.status()["daemon"]["pid"]
    config = json.loads(fake_project.config.read_text())
    config["platform"]["binary"]["env"]["EXTRA"] = "1"
    write_atomic(fake_project.config, json.dumps(config))
    reloaded = daemon.wait_event("config.reloaded")[0]
    assert reloaded["changed"] == ["platform"]
    status = wait_until(
        lambda: (
            (s := daemon.status())["platform"]["pid"] not in (None, pid)
            and s["platform"]["state"] == "running"
            and s
        ),
        what="platform restarted with the new config",
    )
    assert status["daemon"]["pid"] == daemon_pid and status["config_error"] is None
    assert fake_project.version() == "v1"


def test_invalid_config_edit_is_reported_and_ignored(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """A misspelt key: config.invalid, status.config_error, the running config stays."""
    daemon.start()
    pid = daemon.wait_platform("running")["platform"]["pid"]
    good = fake_project.config.read_text()
    config = json.loads(good)
    config["platform"]["binary"]["stop_timout"] = 3
    write_atomic(fake_project.config, json.dumps(config))
    event = daemon.wait_event("config.invalid")[0]
    assert "stop_timout" in event["error"] and "stop_timeout" in event["error"]
    status = daemon.status()
    assert "stop_timout" in status["config_error"]
    assert status["platform"]["pid"] == pid
    # `devsup status` still finds the daemon through the (broken) config's project key.
    result = daemon.cli("status")
    assert result.returncode == 0 and "config   ERROR" in result.stdout
    write_atomic(fake_project.config, good.replace('"stop_timeout": 2', '"stop_timeout": 3'))
    wait_until(lambda: daemon.status()["config_error"] is None, what="error cleared")
    fake_project.set_source("v2")  # still supervising
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")


@pytest.mark.docker
def test_compose_edit_recreates_only_the_changed_service(
    demo_stack: DemoStack, tmp_path: Path
) -> None:
    """Editing postgres's definition recreates postgres; redpanda keeps its container."""
    compose_dir = tmp_path / "compose"
    shutil.copytree(DEMO_STACK, compose_dir)
    write_config(
        demo_stack.config,
        demo_stack.compose.name,
        demo_stack.sources,
        demo_stack.env["PLATFORM_PORT"],
        compose={"directory": str(compose_dir), "files": ["docker-compose.yaml"]},
    )
    d = demo_stack.daemon.start()
    d.wait_platform("running", timeout=120)
    ids = {s: demo_stack.compose.container_id(s) for s in ("redpanda", "postgres")}
    base = compose_dir / "docker-compose.yaml"
    text = base.read_text()
    write_atomic(
        base,
        text.replace(
            "      STANDIN_DATA_DIR: /data", '      STANDIN_DATA_DIR: /data\n      EDITED: "1"'
        ),
    )
    wait_until(
        lambda: demo_stack.compose.container_id("postgres") not in ("", ids["postgres"]),
        timeout=120,
        what="postgres recreated",
    )
    wait_until(
        lambda: demo_stack.compose.health("postgres") == "healthy",
        timeout=60,
        what="postgres healthy again",
    )
    assert demo_stack.compose.container_id("redpanda") == ids["redpanda"]
    assert "stack.reapplying" in d.event_names()
