"""Fast tier: docker/compose calls have deadlines and leave no process behind (a fake `docker`
on PATH stands in for the real CLI; no engine needed)."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import psutil
import pytest

from devsupervisor.errors import CommandTimeout, ComposeError
from devsupervisor.stack.compose import Compose, ComposeFiles
from tests.harness import DaemonProcess, FakeProject, private_env

# A `docker` that hangs like a wedged compose call, with a child of its own (as the CLI runs the
# compose plugin), and records the child's pid so the test can look for it afterwards.
HANGING_DOCKER = """#!/bin/sh
sleep 300 &
echo $! > "{pidfile}"
echo "pulling..."
wait
"""


def _fake_docker(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "docker"
    exe.write_text(script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def hanging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH leads to a hanging `docker`; returns the file its child's pid is written to."""
    pidfile = tmp_path / "child.pid"
    _fake_docker(tmp_path / "bin", HANGING_DOCKER.format(pidfile=pidfile))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    return pidfile


def _compose(tmp_path: Path, timeout: float) -> Compose:
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    model = ComposeFiles("tproj", (tmp_path / "docker-compose.yaml",))
    return Compose(model, on_line=lambda line: None, timeout=timeout)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_hung_compose_call_times_out_naming_it_and_leaves_no_child(
    tmp_path: Path, hanging: Path
) -> None:
    """A compose call past its timeout fails with CommandTimeout naming it; its tree is gone."""
    compose = _compose(tmp_path, timeout=0.5)
    before = _children()
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"docker compose up -d postgres timed out after 0.5s"):
        asyncio.run(compose.up(["postgres"], wait=False))
    assert time.monotonic() - started < 5
    grandchild = int(hanging.read_text())
    assert _gone(grandchild), "the CLI's child (the compose plugin's place) was killed too"
    assert _children() <= before


def test_every_kind_of_call_has_the_deadline(tmp_path: Path, hanging: Path) -> None:
    """Captured calls (config --services, ps, logs) time out too."""
    compose = _compose(tmp_path, timeout=0.3)
    for call in (compose.services(), compose.ps(), compose.logs("postgres", 10)):
        with pytest.raises(CommandTimeout):
            asyncio.run(call)


def test_build_timeout_is_a_failed_build_that_says_so(tmp_path: Path, hanging: Path) -> None:
    """An image build past its timeout is a failed BuildResult with the reason, not a hang."""
    compose = _compose(tmp_path, timeout=60)
    result = asyncio.run(compose.build("platform", timeout=0.3))
    assert not result.ok
    assert "docker compose build platform timed out after 0.3s" in (result.error_tail or "")


def test_cancellation_kills_the_tree(tmp_path: Path, hanging: Path) -> None:
    """Cancelling a compose call (devsup stop during a bring-up) kills its whole tree."""
    compose = _compose(tmp_path, timeout=300)

    async def body() -> None:
        task = asyncio.ensure_future(compose.up(["postgres"], wait=False))
        deadline = time.monotonic() + 5
        while not hanging.exists() or not hanging.read_text().strip():
            assert time.monotonic() < deadline, "fake docker never started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = _children()
    asyncio.run(body())
    assert _gone(int(hanging.read_text()))
    assert _children() <= before


def test_missing_docker_cli_is_a_compose_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No docker on PATH: a ComposeError that says so, not a traceback."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    compose = _compose(tmp_path, timeout=5)
    with pytest.raises(ComposeError, match="cannot run docker"):
        asyncio.run(compose.services())


def test_failed_call_names_the_command_and_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-zero exit raises ComposeError with the subcommand, exit code and last output line."""
    _fake_docker(tmp_path / "bin", "#!/bin/sh\necho 'no such service: nope' >&2\nexit 3\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    compose = _compose(tmp_path, timeout=5)
    with pytest.raises(
        ComposeError,
        match=r"docker compose rm --stop --force nope failed \(exit 3\): no such service",
    ):
        asyncio.run(compose.remove(["nope"]))


def test_daemon_with_a_hung_compose_degrades_the_stack_and_runs_the_platform(
    fake_project: FakeProject,
) -> None:
    """A compose call that hangs: after compose.timeout the stack is degraded saying which
    command timed out, the host binary runs, and the hung command's tree is gone."""
    bin_dir = fake_project.root.parent / "bin"
    pidfile = fake_project.root.parent / "child.pid"
    _fake_docker(bin_dir, HANGING_DOCKER.format(pidfile=pidfile))
    compose_dir = fake_project.root / "compose"
    compose_dir.mkdir()
    (compose_dir / "docker-compose.yaml").write_text("services:\n  db:\n    image: x\n")
    config = json.loads(fake_project.config.read_text())
    config["compose"] = {"directory": "compose", "files": ["docker-compose.yaml"], "timeout": 1}
    fake_project.config.write_text(json.dumps(config))
    env = private_env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    env["DOCKER_HOST"] = f"unix://{fake_project.root}/no-docker.sock"
    d = DaemonProcess(fake_project.config, env=env, project=fake_project.project)
    try:
        d.start()
        status = d.wait_platform("running")
        assert status["state"] == "degraded"
        reasons = [e["reason"] for e in d.events() if e["event"] == "stack.failed"]
        assert reasons and "timed out after 1s" in reasons[0], reasons
        assert "docker compose" in reasons[0]
        assert _gone(int(pidfile.read_text()))
    finally:
        d.stop()
