"""Fixtures of the fast tier: the real owners on a fake clock, fake targets and compose.

Each test is a plain function that runs one scenario coroutine with `asyncio.run`; the owners
are built inside it (they need the running loop) through the factories here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devsupervisor.config import load_config
from devsupervisor.config.model import Config
from devsupervisor.orchestrator import Orchestrator
from devsupervisor.platform.owner import PlatformOwner
from tests.fast.fakes import FakeServices, FakeTarget, FakeTimers, World

CONFIG = """\
project: fasttier
compose: {directory: ., files: []}
stacks:
  skeleton: {platform: binary}
  other: {platform: binary}
platform:
  watch: {paths: [.], include: ["*.go"]}
  binary: {workdir: ., build: "true", run: exec true}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "devsup.yaml"
    path.write_text(CONFIG)
    return load_config(path)


def make_owner(target: FakeTarget, timers: FakeTimers, **kwargs: Any) -> PlatformOwner:
    """A started platform owner on the fake clock (call inside the running loop)."""
    owner = PlatformOwner(
        target, debounce=0.1, clock=timers.clock, call_later=timers.call_later, **kwargs
    )
    owner.start()
    return owner


def make_orchestrator(
    config: Config, world: World, services: FakeServices, *, stack: str = "skeleton"
) -> Orchestrator:
    """A started stack owner whose targets are `FakeTarget`s in `world`."""

    async def fingerprint() -> str:
        return "fp"

    async def restart_watcher() -> None:
        pass

    def make_target(config: Config, stack: str) -> FakeTarget:
        return FakeTarget(world, name=stack)

    orch = Orchestrator(
        config,
        stack,
        services=services,  # type: ignore[arg-type]
        make_target=make_target,  # type: ignore[arg-type]
        fingerprint=fingerprint,
        builds={},
        on_change=lambda: None,
        on_build_line=lambda line: None,
        restart_watcher=restart_watcher,
    )
    orch.start()
    return orch
