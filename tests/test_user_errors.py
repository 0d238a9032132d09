"""The errors users meet: each is one clear line (no traceback) with the right exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import DaemonProcess, FakeProject, private_env


def devsup(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devsupervisor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_no_config_found_says_where_it_looked(tmp_path: Path) -> None:
    """`devsup run` with no config anywhere: exit 2, every place looked at is named."""
    env = private_env()
    line = _one_line(result := devsup("run", env=env, cwd=tmp_path))
    assert result.returncode == 2
    for place in ("devsup.yaml", "config/devsup.yaml", "DEVSUP_CONFIG", env["XDG_CONFIG_HOME"]):
        assert place in line


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error: file:line:column in one line, exit 2."""
    config = tmp_path / "devsup.yaml"
    config.write_text("project: x\nstacks:\n  skeleton: {platform: binary\n")
    result = devsup("config", "check", str(config), env=private_env(), cwd=tmp_path)
    line = _one_line(result)
    assert (result.returncode == 2 and f"{config}:4:1" in line) or f"{config}:3:" in line


def test_unknown_key_suggests_the_right_one(fake_project: FakeProject) -> None:
    """A misspelt key: its path and a did-you-mean, exit 2."""
    config = json.loads(fake_project.config.read_text())
    config["platfrom"] = config.pop("platform")
    fake_project.config.write_text(json.dumps(config))
    result = devsup(
        "run", "--config", str(fake_project.config), env=private_env(), cwd=fake_project.root
    )
    line = _one_line(result)
    assert result.returncode == 2 and "platfrom" in line and "did you mean 'platform'" in line


def test_daemon_not_running_exit_3_says_how_to_start(tmp_path: Path) -> None:
    """Client commands with no daemon: exit 3 and how to start one."""
    result = devsup("status", "--project", "nosuch", env=private_env(), cwd=tmp_path)
    line = _one_line(result)
    assert result.returncode == 3 and "devsup run" in line


def test_socket_path_too_long(fake_project: FakeProject, tmp_path: Path) -> None:
    """A runtime dir too long for AF_UNIX: exit 2 naming the path and the limit."""
    env = private_env()
    long_dir = tmp_path / ("r" * 120)
    long_dir.mkdir()
    env["XDG_RUNTIME_DIR"] = str(long_dir)
    result = devsup("run", "--config", str(fake_project.config), env=env, cwd=fake_project.root)
    line = _one_line(result)
    assert result.returncode == 2 and "107" in line and "XDG_RUNTIME_DIR" in line
    status = devsup("status", "--project", fake_project.project, env=env, cwd=tmp_path)
    assert status.returncode == 2 and "107" in _one_line(status)


# Another uid being refused is shown at the socket level, with a real `nobody` client, in
# test_control_socket.py (the CLI's own interpreter lives under /root, unreadable to nobody).


def test_docker_absent_is_a_sentence(fake_project: FakeProject) -> None:
    """With compose services but no Docker engine: the stack is degraded with a one-sentence
    reason, and the host binary still runs."""
    compose_dir = fake_project.root / "compose"
    compose_dir.mkdir()
    (compose_dir / "docker-compose.yaml").write_text("services:\n  db:\n    image: x\n")
    config = json.loads(fake_project.config.read_text())
    config["compose"] = {"directory": "compose", "files": ["docker-compose.yaml"]}
    fake_project.config.write_text(json.dumps(config))
    env = private_env()
    env["DOCKER_HOST"] = f"unix://{fake_project.root}/no-docker.sock"
    d = DaemonProcess(fake_project.config, env=env, project=fake_project.project)
    try:
        d.start()
        status = d.wait_platform("running")
        assert status["state"] == "degraded"
        reasons = [e for e in d.events() if e["event"] == "stack.failed"]
        assert reasons and "Traceback" not in reasons[0]["reason"]
        assert "docker" in reasons[0]["reason"].lower()
        assert len(reasons[0]["reason"].splitlines()) == 1
    finally:
        d.stop()
