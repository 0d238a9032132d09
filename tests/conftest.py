"""Shared fixtures: throwaway projects and daemons that always clean up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_env import compose_project, demo_images, docker_engine  # noqa: F401
from tests.harness import DaemonProcess, FakeProject
from tests.stack_env import demo_stack  # noqa: F401


@pytest.fixture
def project_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake_project(tmp_path: Path, project_name: str) -> FakeProject:
    return FakeProject(tmp_path / "proj", project=project_name)


@pytest.fixture
def daemon(fake_project: FakeProject) -> Iterator[DaemonProcess]:
    """A daemon on `fake_project`, not yet started; stopped (and its platform killed) after."""
    d = DaemonProcess(fake_project.config, project=fake_project.project)
    try:
        yield d
    finally:
        d.stop()
