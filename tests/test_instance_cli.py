"""What the CLI shows of instances: the status screen's instance and ports lines, the `devsup ls`
table, and `ls` with no daemon."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devsupervisor.cli import ls_command, status_view
from tests.fixtures.fake_daemon import STATUS

REPO = Path(__file__).resolve().parents[1]


def test_status_screen_shows_instance_checkout_and_ports() -> None:
    """The screen names the instance, its config file and each NAME=port."""
    status: Any = copy.deepcopy(STATUS)
    status.update(
        instance="fake-review",
        checkout="/src/review/devsup.yaml",
        ports={"PLATFORM_PORT": 8081, "DB_PORT": 5433},
    )
    screen = status_view.render(status)
    assert "instance fake-review   /src/review/devsup.yaml" in screen
    assert "ports    PLATFORM_PORT=8081  DB_PORT=5433" in screen


def test_status_screen_of_a_daemon_before_instances() -> None:
    """A status without the instance keys still renders (a newer client, an older daemon)."""
    screen = status_view.render(copy.deepcopy(STATUS))  # type: ignore[arg-type]
    assert "instance" not in screen


def test_ls_table_is_aligned_and_escaped() -> None:
    """One row per instance, columns aligned, checkout last, ports on a line of their own,
    daemon text escaped."""
    rows = [
        {
            "instance": "demo",
            "project": "demo",
            "checkout": "/src/main/config/devsup.yaml",
            "stack": "skeleton",
            "state": "running",
            "ports": {"PLATFORM_PORT": 8080},
            "dashboard": "http://127.0.0.1:40000/",
        },
        {
            "instance": "demo-review-\x1b[2J",
            "project": "demo",
            "checkout": None,
            "stack": "fullstack",
            "state": "degraded",
            "ports": {},
            "dashboard": None,
        },
    ]
    lines = ls_command.render(rows).splitlines()
    assert lines[0].split() == ["INSTANCE", "PROJECT", "STACK", "STATE", "DASHBOARD", "CHECKOUT"]
    assert lines[2] == "  ports  PLATFORM_PORT=8080"
    assert lines[1].index("skeleton") == lines[3].index("fullstack")
    assert lines[1].endswith("/src/main/config/devsup.yaml")
    assert len(lines) == 4  # no ports line for an instance without ports
    assert "\x1b" not in "".join(lines)


def test_ls_without_daemons(tmp_path: Path) -> None:
    """No daemon answers: a one-line note and exit 0; --json prints an empty list."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    for args, expected in ((["ls"], "no devsup daemon answers"), (["ls", "--json"], "[]")):
        done = subprocess.run(
            [sys.executable, "-m", "devsupervisor", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected)
