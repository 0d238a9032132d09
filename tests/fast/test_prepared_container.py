"""The stack owner creates a container platform ahead of its start while the services come up
(when its image is current), and removes that container again when the services fail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devsupervisor.config import load_config
from devsupervisor.config.model import Config
from devsupervisor.orchestrator import Orchestrator
from devsupervisor.states import PlatformState, StackState
from tests.fast.fakes import FakeServices, FakeTarget, World

CONFIG = """\
project: fastprep
compose: {directory: ., files: [docker-compose.yaml]}
stacks:
  skeleton: {platform: binary}
  fullstack: {platform: container}
platform:
  watch: {paths: [.], include: ["*.go"]}
  binary: {workdir: ., build: "true", run: exec true}
  container: {service: platform}
"""


class PreparingTarget(FakeTarget):
    """A container-mode fake that records `prepare` / `discard_prepared` / `start` in order."""

    mode = "container"

    def __init__(self, world: World, calls: list[str], name: str) -> None:
        super().__init__(world, name=name)
        self.calls = calls

    async def prepare(self) -> None:
        self.calls.append("prepare")

    async def discard_prepared(self) -> None:
        self.calls.append("discard")

    async def start(self) -> None:
        self.calls.append("start")
        await super().start()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    path = tmp_path / "devsup.yaml"
    path.write_text(CONFIG)
    return load_config(path)


def _orchestrator(
    config: Config, world: World, services: FakeServices, calls: list[str], built: str | None
) -> Orchestrator:
    async def fingerprint() -> str:
        return "fp"

    async def restart_watcher() -> None:
        pass

    def make_target(config: Config, stack: str) -> FakeTarget:
        if config.stacks[stack].platform == "container":
            return PreparingTarget(world, calls, stack)
        return FakeTarget(world, name=stack)

    orch = Orchestrator(
        config,
        "skeleton",
        services=services,  # type: ignore[arg-type]
        make_target=make_target,  # type: ignore[arg-type]
        fingerprint=fingerprint,
        builds={} if built is None else {"container": built},
        on_change=lambda: None,
        on_build_line=lambda line: None,
        restart_watcher=restart_watcher,
    )
    orch.start()
    return orch


def test_prepared_while_services_come_up_then_started(config: Config) -> None:
    """Image current: prepare runs inside the services' bring-up, the start follows them."""

    async def scenario() -> None:
        world, services, calls = World(), FakeServices(), list[str]()
        orch = _orchestrator(config, world, services, calls, built="fp")
        assert await orch.enter_initial()
        assert await orch.switch("fullstack")
        assert calls == ["prepare", "start"]
        assert orch.stack_state == StackState.RUNNING and len(world.alive) == 1
        await orch.shutdown(down=False)

    asyncio.run(scenario())


def test_not_prepared_when_a_build_comes_first(config: Config) -> None:
    """Sources changed since the last container build (or none yet): no prepare."""

    async def scenario() -> None:
        for built in (None, "older"):
            world, services, calls = World(), FakeServices(), list[str]()
            orch = _orchestrator(config, world, services, calls, built=built)
            assert await orch.enter_initial()
            assert await orch.switch("fullstack")
            assert calls == ["start"]
            await orch.shutdown(down=False)

    asyncio.run(scenario())


def test_failed_services_discard_the_prepared_container(config: Config) -> None:
    """Services fail: the created container is removed, the host binary keeps serving."""

    async def scenario() -> None:
        world, services, calls = World(), FakeServices(), list[str]()
        orch = _orchestrator(config, world, services, calls, built="fp")
        assert await orch.enter_initial()
        binary = next(iter(world.alive))
        services.fail = "service emqx is unhealthy"
        assert not await orch.switch("fullstack")
        assert calls == ["prepare", "discard"]
        assert orch.stack_state == StackState.DEGRADED
        assert orch.platform.state == PlatformState.RUNNING and list(world.alive) == [binary]
        await orch.shutdown(down=False)

    asyncio.run(scenario())
