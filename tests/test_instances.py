"""Several checkouts at once, on the real engine: two linked git worktrees of one repository run
the demo stack side by side, each with its own containers, volumes, ports and platform.

The module's worktrees and daemons are shared by its tests (a bring-up of two stacks is the slow
part); the tests run in file order and the last one takes one instance down. Everything the
module created (containers, volumes, networks, processes) is removed at its end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.docker_env import (
    DEMO_STACK,
    PLATFORM_DIR,
    free_port,
    project_leftovers,
    remove_project,
    run,
)
from tests.harness import (
    FIXTURES,
    DaemonProcess,
    http_get,
    private_env,
    wait_until,
    write_atomic,
)
from tests.test_listen_e2e import _go_project

# A first bring-up builds the Go platform and starts the stand-ins on a loaded 2-core machine.
BRING_UP = 120.0
PORT_NAMES = (
    "PLATFORM_PORT",
    "DEMO_POSTGRES_PORT",
    "DEMO_REDPANDA_PORT",
    "DEMO_TRAEFIK_PORT",
    "DEMO_EMQX_PORT",
    "DEMO_AI_INFERENCE_PORT",
)
GIT = ["git", "-c", "user.name=devsup-test", "-c", "user.email=test@devsup.invalid"]

CONFIG = """\
project: {project}
ports: {ports}
compose:
  directory: ../examples/demo-stack
  files: [docker-compose.yaml]
stacks:
  skeleton:
    files: [docker-compose.monolith.yaml]
    platform: binary
  # The fullstack services beside the binary platform: a switch that starts containers.
  wide:
    files: [docker-compose.monolith.yaml, docker-compose.fullstack.yaml]
    profiles: [fullstack]
    platform: binary
platform:
  watch:
    paths: [../examples/platform-services]
    include: ["**/*.go"]
    ignore: ["bin/**"]
  binary:
    workdir: ../examples/platform-services
    build: go build -o bin/platform ./cmd
    run: exec ./bin/platform
    env: {{PLATFORM_ADDR: "127.0.0.1:${{PLATFORM_PORT}}"}}
    ready: {{http: "http://127.0.0.1:${{PLATFORM_PORT}}/healthz", timeout: 60}}
    stop_timeout: 3
dashboard: false
"""


def git(*args: str | Path, cwd: Path) -> None:
    subprocess.run([*GIT, *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_repo(root: Path, project: str, defaults: dict[str, int]) -> Path:
    """A git repository holding the demo stack, the example platform and a devsup config."""
    repo = root / "repo"
    shutil.copytree(DEMO_STACK, repo / "examples" / "demo-stack")
    shutil.copytree(
        PLATFORM_DIR, repo / "examples" / "platform-services", ignore=shutil.ignore_patterns("bin")
    )
    (repo / "config").mkdir()
    ports = json.dumps(defaults)
    (repo / "config" / "devsup.yaml").write_text(CONFIG.format(project=project, ports=ports))
    (repo / ".gitignore").write_text("bin/\n")
    git("init", "-q", ".", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-qm", "demo", cwd=repo)
    return repo


@dataclass
class Checkout:
    """One linked worktree and the daemon of its instance."""

    path: Path
    instance: str
    daemon: DaemonProcess

    @property
    def main_go(self) -> Path:
        return self.path / "examples" / "platform-services" / "cmd" / "main.go"

    def set_version(self, value: str) -> None:
        text = self.main_go.read_text()
        start = text.index('const version = "') + len('const version = "')
        end = text.index('"', start)
        write_atomic(self.main_go, text[:start] + value + text[end:])

    def status(self) -> dict[str, Any]:
        return self.daemon.status()

    def version(self) -> str | None:
        port = self.status()["ports"]["PLATFORM_PORT"]
        return http_get(f"http://127.0.0.1:{port}/version")

    def containers(self) -> dict[str, str]:
        """service -> container id of this instance's running containers."""
        label = f"label=com.docker.compose.project={self.instance}"
        fmt = '{{.Label "com.docker.compose.service"}} {{.ID}}'
        out = run(["docker", "ps", "--filter", label, "--format", fmt]).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def published(self) -> set[int]:
        label = f"label=com.docker.compose.project={self.instance}"
        out = run(["docker", "ps", "--filter", label, "--format", "{{.Ports}}"]).stdout
        return {
            int(part.split("->")[0].rsplit(":", 1)[1])
            for part in out.replace(",", " ").split()
            if "->" in part
        }

    def wait_serving(self, version: str, timeout: float = BRING_UP) -> None:
        wait_until(
            lambda: self.status()["state"] == "running" and self.version() == version,
            timeout,
            f"{self.instance} serving {version} ({self.daemon.log_tail()[-600:]})",
        )


@dataclass
class Pair:
    a: Checkout
    b: Checkout
    defaults: dict[str, int]
    env: dict[str, str]
    second_serving: float  # seconds from `devsup run` in b to its platform serving


@pytest.fixture(scope="module")
def pair(demo_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two linked worktrees of one repository, each running the demo stack under its daemon."""
    root = tmp_path_factory.mktemp("inst")
    project = f"di{time.time_ns() % 10**8:08d}"
    defaults = {name: free_port() for name in PORT_NAMES}
    repo = make_repo(root, project, defaults)
    env = private_env()
    checkouts: list[Checkout] = []
    for name in ("Feature-A", "review_b"):
        path = root / name
        git("worktree", "add", "-q", path, cwd=repo)
        instance = f"{project}-{name.lower().replace('_', '-')}"
        daemon = DaemonProcess(path / "config" / "devsup.yaml", env=env, project=instance)
        checkouts.append(Checkout(path, instance, daemon))
    a, b = checkouts
    b.set_version("b-1")
    try:
        a.daemon.start()
        a.wait_serving(_version(a))
        started = time.monotonic()
        b.daemon.start()
        b.wait_serving("b-1")
        second = time.monotonic() - started
        print(f"\nsecond worktree: devsup run -> platform serving in {second:.2f}s")
        yield Pair(a, b, defaults, env, second)
    finally:
        for checkout in checkouts:
            checkout.daemon.stop()
            remove_project(checkout.instance)


def _version(checkout: Checkout) -> str:
    text = checkout.main_go.read_text()
    start = text.index('const version = "') + len('const version = "')
    return text[start : text.index('"', start)]


@pytest.mark.docker
def test_each_worktree_has_its_own_instance_ports_and_platform(pair: Pair) -> None:
    """Instances are named after the worktrees; ports differ; each platform serves its version."""
    sa, sb = pair.a.status(), pair.b.status()
    assert (sa["instance"], sb["instance"]) == (pair.a.instance, pair.b.instance)
    assert sa["project"] == sb["project"]
    assert sa["checkout"] == str(pair.a.path / "config" / "devsup.yaml")
    assert sa["ports"] == pair.defaults  # the first instance gets every default
    assert set(sb["ports"]) == set(PORT_NAMES)
    assert not set(sa["ports"].values()) & set(sb["ports"].values())
    assert pair.a.version() == _version(pair.a)
    assert pair.b.version() == "b-1"
    # Own containers and volumes, published on the instance's own ports.
    assert set(pair.a.containers()) == set(pair.b.containers()) == {"postgres", "redpanda"}
    assert not set(pair.a.containers().values()) & set(pair.b.containers().values())
    assert pair.a.published() == {
        sa["ports"]["DEMO_POSTGRES_PORT"],
        sa["ports"]["DEMO_REDPANDA_PORT"],
    }
    assert pair.b.published() == {
        sb["ports"]["DEMO_POSTGRES_PORT"],
        sb["ports"]["DEMO_REDPANDA_PORT"],
    }
    for checkout in (pair.a, pair.b):
        volumes = [v for v in project_leftovers(checkout.instance) if v.startswith("volume:")]
        assert f"volume:{checkout.instance}_postgres-data" in volumes


@pytest.mark.docker
def test_ls_and_a_client_inside_a_worktree(pair: Pair) -> None:
    """`devsup ls --json` lists both; `devsup status` run in a worktree reaches its own daemon."""
    listed = subprocess.run(
        [sys.executable, "-m", "devsupervisor", "ls", "--json"],
        env=pair.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = {row["instance"]: row for row in json.loads(listed.stdout)}
    assert set(rows) >= {pair.a.instance, pair.b.instance}
    row = rows[pair.b.instance]
    assert set(row) == {"instance", "project", "checkout", "stack", "state", "ports", "dashboard"}
    assert row["ports"] == pair.b.status()["ports"]
    assert row["stack"] == "skeleton"
    at_root = subprocess.run(
        [sys.executable, "-m", "devsupervisor", "status", "--json"],
        env=pair.env,
        cwd=pair.b.path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(at_root.stdout)["instance"] == pair.b.instance


@pytest.mark.docker
def test_a_save_rebuilds_only_its_own_worktree(pair: Pair) -> None:
    """Editing a's sources rebuilds and restarts a's platform; b's keeps its pid and build."""
    before_b = pair.b.status()["platform"]
    pair.a.set_version("a-2")
    pair.a.wait_serving("a-2", timeout=60)
    after_b = pair.b.status()["platform"]
    assert after_b["pid"] == before_b["pid"]
    assert after_b["last_build"] == before_b["last_build"]
    assert pair.b.version() == "b-1"


@pytest.mark.docker
def test_switch_in_one_leaves_the_other_alone(pair: Pair) -> None:
    """Switching a to another stack starts a's extra services; b's containers are untouched."""
    b_ids = pair.b.containers()
    result = pair.a.daemon.cli("switch", "wide", timeout=BRING_UP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"traefik", "emqx", "ai-inference"} <= set(pair.a.containers())
    assert pair.b.containers() == b_ids
    assert pair.b.status()["stack"] == "skeleton"


@pytest.mark.docker
def test_a_restarted_daemon_keeps_its_ports(pair: Pair) -> None:
    """A daemon restarted while its stack runs gets the same ports; its containers stay."""
    ports = pair.a.status()["ports"]
    ids = pair.a.containers()
    assert pair.a.daemon.stop() == 0
    pair.a.daemon.start()
    pair.a.wait_serving("a-2")
    assert pair.a.status()["ports"] == ports
    assert pair.a.containers() == ids
    assert pair.a.status()["stack"] == "wide"


@pytest.mark.docker
def test_stop_down_in_one_leaves_the_other_running(pair: Pair) -> None:
    """`stop --down` in a removes a's containers (volumes kept); b keeps running and serving."""
    b_ids = pair.b.containers()
    result = pair.a.daemon.cli("stop", "--down", timeout=BRING_UP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert pair.a.daemon.proc is not None
    pair.a.daemon.proc.wait(timeout=60)
    assert pair.a.containers() == {}
    assert f"volume:{pair.a.instance}_postgres-data" in project_leftovers(pair.a.instance)
    assert pair.b.containers() == b_ids
    assert pair.b.version() == "b-1"


THREE_CONFIG = {
    "compose": {"files": []},
    "stacks": {"skeleton": {"platform": "binary"}},
    "platform": {
        "watch": {"paths": ["."], "include": ["src/**"], "ignore": ["bin/**"]},
        "binary": {
            "workdir": ".",
            "build": f"sh {FIXTURES / 'fakebuild.sh'} -o bin/app.txt",
            "run": f"exec {sys.executable} {FIXTURES / 'fakeplatform.py'}",
            "env": {"PLATFORM_ADDR": "127.0.0.1:${WEB_PORT}"},
            "ready": {"http": "http://127.0.0.1:${WEB_PORT}/healthz", "timeout": 20},
            "stop_timeout": 2,
        },
    },
    "dashboard": False,
}


def _platform_running(daemon: DaemonProcess) -> bool:
    return bool(daemon.status()["platform"]["state"] == "running")


def test_three_daemons_started_at_once_get_distinct_ports(tmp_path: Path) -> None:
    """Three instances of one config started at the same moment get six distinct ports, and
    each platform serves on its own."""
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.txt").write_text("v1\n")
    config = root / "devsup.yaml"
    defaults = {"WEB_PORT": free_port(), "OTHER_PORT": free_port()}
    config.write_text(json.dumps({"project": "trio", "ports": defaults, **THREE_CONFIG}))
    env = {**private_env(), "BUILD_LOG": str(tmp_path / "builds.log")}
    daemons = [DaemonProcess(config, env=env, project=f"trio-{n}") for n in range(3)]
    try:
        for daemon in daemons:
            daemon.start("--instance", daemon.project)
        for daemon in daemons:
            wait_until(partial(_platform_running, daemon), 60, f"{daemon.project} running")
        given = [daemon.status()["ports"] for daemon in daemons]
        every = [port for ports in given for port in ports.values()]
        assert len(set(every)) == 6, given
        assert defaults in given  # one of them got the defaults
        for ports in given:
            assert http_get(f"http://127.0.0.1:{ports['WEB_PORT']}/version") == "v1"
    finally:
        for daemon in daemons:
            daemon.stop()


def test_a_live_reload_adds_a_port_and_keeps_the_others(tmp_path: Path) -> None:
    """A config edit that adds a port name gets it a port (not one already given) and keeps the
    ports given before, without a restart of the daemon."""
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.txt").write_text("v1\n")
    config = root / "devsup.yaml"
    web = free_port()
    body: dict[str, Any] = {"project": "solo", "ports": {"WEB_PORT": web}, **THREE_CONFIG}
    config.write_text(json.dumps(body))
    env = {**private_env(), "BUILD_LOG": str(tmp_path / "builds.log")}
    daemon = DaemonProcess(config, env=env, project="solo")
    try:
        daemon.start()
        wait_until(partial(_platform_running, daemon), 60, "platform running")
        before = daemon.status()["ports"]
        body["ports"] = {"WEB_PORT": web, "EXTRA_PORT": before["WEB_PORT"]}
        write_atomic(config, json.dumps(body))
        daemon.wait_event("config.reloaded")
        after = daemon.status()["ports"]
        assert after["WEB_PORT"] == before["WEB_PORT"]
        assert after["EXTRA_PORT"] not in (before["WEB_PORT"], 0)
        assert daemon.status()["config_error"] is None
    finally:
        daemon.stop()


def test_only_daemons_sockets_in_the_socket_directory(tmp_path: Path) -> None:
    """A notify-ready platform's datagram socket lives apart from the control sockets, so a
    client with no config and no --instance still finds the only daemon."""
    config = _go_project(tmp_path, "notified", [f"127.0.0.1:{free_port()}"])
    daemon = DaemonProcess(config, project="notified")
    try:
        daemon.start()
        daemon.wait_platform("running", timeout=120)
        sockets = sorted(p.name for p in daemon.socket.parent.glob("*.sock"))
        assert sockets == ["notified.sock"]
        done = subprocess.run(
            [sys.executable, "-m", "devsupervisor", "status", "--json"],
            env=daemon.env,
            cwd=tmp_path / "platform-services",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["instance"] == "notified"
    finally:
        daemon.stop()
