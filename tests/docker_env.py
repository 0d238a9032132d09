"""Shared helpers for tests that need the real Docker engine and compose CLI.

Import the fixtures into a test module (`from tests.docker_env import demo_images`) or
use the plain functions. Nothing here skips: without an engine that answers, a test fails and says
why (run `scripts/prereqs`, which installs and starts what is missing).

Every project a test creates gets a unique name (`unique_project`) and is removed by
`remove_project`, which goes by compose's project label rather than by compose files, so it also
cleans up after a test that failed halfway or passed the wrong files.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_STACK = REPO_ROOT / "docker-compose"
DEMO_STACK = REPO_ROOT / "examples" / "demo-stack"
PLATFORM_DIR = REPO_ROOT / "examples" / "platform-services"
STANDIN_IMAGE = "devsup-demo/standin:local"
PLATFORM_IMAGE = "devsup-demo/platform:local"
# The label compose puts on every container, network and volume it creates for a project.
PROJECT_LABEL = "com.docker.compose.project"
# Port variables of the demo stack's compose files, so parallel tests can publish on free ports.
DEMO_PORT_VARS = (
    "PLATFORM_PORT",
    "DEMO_REDPANDA_PORT",
    "DEMO_POSTGRES_PORT",
    "DEMO_TRAEFIK_PORT",
    "DEMO_EMQX_PORT",
    "DEMO_AI_INFERENCE_PORT",
)
# Image builds and `up --wait` on a loaded 2-core machine; a passing run never waits this out.
COMMAND_TIMEOUT = 120.0


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(
        [os.fspath(a) for a in args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def docker_problem() -> str | None:
    """Why the Docker side is unusable, or None when the engine and compose v2 both answer."""
    try:
        info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker CLI unusable: {exc}"
    if info.returncode != 0:
        return f"no Docker engine answers (`docker info`): {info.stderr.strip()}"
    compose = run(["docker", "compose", "version", "--short"], timeout=20)
    if compose.returncode != 0:
        return f"compose v2 plugin missing (`docker compose version`): {compose.stderr.strip()}"
    return None


def require_docker() -> None:
    """Fail the calling test (never skip) with the reason when Docker is unusable."""
    problem = docker_problem()
    if problem is not None:
        pytest.fail(f"{problem}; run scripts/prereqs to install and start it", pytrace=False)


def build_demo_images() -> None:
    """Build the demo stack's images (quick when nothing changed); fail the test if that fails."""
    result = run([DEMO_STACK / "build-images"])
    if result.returncode != 0:
        pytest.fail(f"examples/demo-stack/build-images failed:\n{result.stderr}", pytrace=False)


def unique_project(prefix: str = "devsup-test") -> str:
    """A compose project name no other test (or parallel run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_port_env() -> dict[str, str]:
    """Environment giving every published port of the demo stack a free port."""
    return {var: str(free_port()) for var in DEMO_PORT_VARS}


def project_leftovers(project: str) -> list[str]:
    """Containers, volumes and networks still labelled with the project, as 'kind:name'."""
    found: list[str] = []
    label = f"label={PROJECT_LABEL}={project}"
    for kind, listing in (
        ("container", ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"]),
        ("volume", ["docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}"]),
        ("network", ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"]),
    ):
        out = run(listing, timeout=30).stdout.split()
        found += [f"{kind}:{name}" for name in out]
    return found


def remove_project(project: str) -> None:
    """Remove everything compose created for the project, volumes included (test projects only)."""
    label = f"label={PROJECT_LABEL}={project}"
    containers = run(["docker", "ps", "-aq", "--filter", label], timeout=30).stdout.split()
    if containers:
        run(["docker", "rm", "-f", "-v", *containers], timeout=60)
    volumes = run(["docker", "volume", "ls", "-q", "--filter", label], timeout=30).stdout.split()
    if volumes:
        run(["docker", "volume", "rm", "-f", *volumes], timeout=60)
    networks = run(["docker", "network", "ls", "-q", "--filter", label], timeout=30).stdout.split()
    if networks:
        run(["docker", "network", "rm", *networks], timeout=60)


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll until the predicate holds; fail the test naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


@dataclass
class ComposeProject:
    """A compose project owned by one test: unique name, its files, env with free ports."""

    name: str
    stack_dir: Path = DEMO_STACK
    files: tuple[str, ...] = ("docker-compose.yaml",)
    env: dict[str, str] = field(default_factory=dict)

    def compose(
        self, *args: str, files: Sequence[str] | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker compose -p NAME -f ... ARGS` with the project's environment."""
        chosen = self.files if files is None else files
        file_args = [arg for name in chosen for arg in ("-f", str(self.stack_dir / name))]
        return run(
            ["docker", "compose", "-p", self.name, *file_args, *args], env=self.env, timeout=timeout
        )

    def container_id(self, service: str) -> str:
        """Id of the service's (first) container, '' when there is none."""
        result = run(
            [
                "docker",
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                f"label={PROJECT_LABEL}={self.name}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ],
            timeout=30,
        )
        ids = result.stdout.split()
        return ids[0] if ids else ""

    def health(self, service: str) -> str:
        """Docker's health status of the service's container ('' when absent or no healthcheck)."""
        cid = self.container_id(service)
        if not cid:
            return ""
        result = run(
            ["docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", cid],
            timeout=30,
        )
        return result.stdout.strip()


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The session's Docker engine and compose plugin answer; fails with the reason otherwise."""
    require_docker()


@pytest.fixture(scope="session")
def demo_images(docker_engine: None) -> None:
    """The demo stack's images exist and match the current stand-in sources."""
    build_demo_images()


@pytest.fixture
def compose_project(demo_images: None) -> Iterator[ComposeProject]:
    """A unique demo-stack project on free ports, removed with its volumes after the test."""
    project = ComposeProject(name=unique_project(), env=demo_port_env())
    try:
        yield project
    finally:
        remove_project(project.name)
