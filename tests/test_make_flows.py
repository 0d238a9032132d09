"""The Makefile's compose flows on the offline demo stack, with the real engine and compose CLI.

Each test runs make with its own project names and free ports, and removes everything those
projects created afterwards, also when it fails.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.docker_env import (
    DEMO_STACK,
    REPO_ROOT,
    ComposeProject,
    build_demo_images,
    demo_port_env,
    project_leftovers,
    remove_project,
    require_docker,
    run,
    unique_project,
)

# Every test here drives the real Docker engine and compose CLI.
pytestmark = pytest.mark.docker

STACK_VAR = f"STACK_DIR={DEMO_STACK.relative_to(REPO_ROOT)}"
# Builds, `up --wait` and teardown of the whole demo stack on a busy 2-core machine.
MAKE_TIMEOUT = 180.0


@dataclass
class MakeRun:
    """Names and environment for make runs of one test."""

    project: str
    e2e_project: str
    env: dict[str, str]

    def make(self, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """Run `make TARGET` on the demo stack with this test's projects and ports."""
        return run(
            [
                "make",
                "--no-print-directory",
                target,
                STACK_VAR,
                f"COMPOSE_PROJECT={self.project}",
                f"E2E_PROJECT={self.e2e_project}",
                *extra,
            ],
            env=self.env,
            timeout=MAKE_TIMEOUT,
        )


@pytest.fixture(scope="module")
def images() -> None:
    """The engine answers and the demo images are current (fails with the reason otherwise)."""
    require_docker()
    build_demo_images()


@pytest.fixture
def make_run(images: None) -> Iterator[MakeRun]:
    """Unique projects on free ports; whatever they created is removed after the test."""
    project = unique_project("devsup-make")
    runner = MakeRun(project=project, e2e_project=f"{project}-e2e", env=demo_port_env())
    try:
        yield runner
    finally:
        remove_project(runner.project)
        remove_project(runner.e2e_project)


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET (short timeout: the service is expected up already)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def http_put(url: str, body: str) -> int:
    """Status of a PUT with a text body."""
    request = urllib.request.Request(url, data=body.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as resp:
        status: int = resp.status
        return status


def test_e2e_skeleton_passing_runner(make_run: MakeRun) -> None:
    """A passing runner makes e2e-skeleton exit 0 and leaves nothing of its project behind."""
    result = make_run.make("e2e-skeleton")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "e2e-runner-1 exited with code 0" in result.stdout
    assert project_leftovers(make_run.e2e_project) == []


def test_e2e_skeleton_failing_runner(make_run: MakeRun) -> None:
    """A failing runner fails e2e-skeleton with the runner's exit code and still tears down."""
    result = make_run.make("e2e-skeleton", "E2E_FAIL=1")
    # make itself always exits 2 on a failed recipe; the recipe's own status is the runner's.
    assert result.returncode != 0
    assert "e2e-runner-1 exited with code 1" in result.stdout
    assert "Error 1" in result.stderr, result.stderr
    assert project_leftovers(make_run.e2e_project) == []


def test_e2e_skeleton_passes_while_the_dev_stack_is_up(make_run: MakeRun) -> None:
    """The e2e flow publishes no host port, so it passes beside a dev stack on the same ports."""
    result = make_run.make("skeleton-up")
    assert result.returncode == 0, result.stdout + result.stderr
    platform = f"http://127.0.0.1:{make_run.env['PLATFORM_PORT']}/healthz"
    assert http_get(platform)[0] == 200
    result = make_run.make("e2e-skeleton")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "e2e-runner-1 exited with code 0" in result.stdout
    assert project_leftovers(make_run.e2e_project) == []
    assert http_get(platform)[0] == 200  # the dev stack was left alone


def test_skeleton_and_fullstack_up_down_keep_volumes(make_run: MakeRun) -> None:
    """skeleton-up serves; fullstack-up adds only its services; the -down flows keep volume data."""
    project = ComposeProject(name=make_run.project, env=make_run.env)
    postgres = f"http://127.0.0.1:{make_run.env['DEMO_POSTGRES_PORT']}"

    result = make_run.make("skeleton-up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert http_get(f"http://127.0.0.1:{make_run.env['PLATFORM_PORT']}/healthz")[0] == 200
    assert http_put(f"{postgres}/data/survivor", "kept") == 204
    base_ids = {name: project.container_id(name) for name in ("redpanda", "postgres")}
    assert project.container_id("traefik") == ""

    result = make_run.make("fullstack-up")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("traefik", "emqx", "ai-inference", "platform"):
        assert project.health(name) == "healthy", name
    assert {name: project.container_id(name) for name in base_ids} == base_ids

    result = make_run.make("skeleton-down")
    assert result.returncode == 0, result.stdout + result.stderr
    leftovers = project_leftovers(make_run.project)
    assert not [item for item in leftovers if not item.startswith("volume:")], leftovers
    assert f"volume:{make_run.project}_postgres-data" in leftovers

    result = make_run.make("skeleton-up")
    assert result.returncode == 0, result.stdout + result.stderr
    assert http_get(f"{postgres}/data/survivor") == (200, "kept")
    result = make_run.make("fullstack-down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [
        item for item in project_leftovers(make_run.project) if item.startswith("container:")
    ]
