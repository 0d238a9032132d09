"""The stack owner (orchestrator) under shutdowns that arrive mid-operation, driven directly
with a fake compose side and fake platform targets."""

from __future__ import annotations

import asyncio

from devsupervisor.config.model import Config
from devsupervisor.states import PlatformState, StackState
from tests.fast.conftest import make_orchestrator
from tests.fast.fakes import FakeServices, World, settle


def test_shutdown_during_the_first_build(config: Config) -> None:
    """SIGTERM while the first build runs: a clean stop, no illegal transition, nothing left."""

    async def scenario(config: Config) -> None:
        world, services = World(), FakeServices()
        world.build_gate = asyncio.Event()
        orch = make_orchestrator(config, world, services)
        entering = asyncio.ensure_future(orch.enter_initial())
        await settle()
        assert orch.platform.state == PlatformState.BUILDING
        await orch.shutdown(down=False)
        assert not await entering
        assert orch.stack_state == StackState.STOPPING
        assert not world.alive and services.stopped

    asyncio.run(scenario(config))


def test_stop_during_a_switch(config: Config) -> None:
    """`stop` while a switch waits on compose cancels the switch and stops the platform."""

    async def scenario(config: Config) -> None:
        world, services = World(), FakeServices()
        orch = make_orchestrator(config, world, services)
        assert await orch.enter_initial()
        services.gate = asyncio.Event()
        switching = asyncio.ensure_future(orch.switch("other"))
        await settle()
        assert orch.stack_state == StackState.SWITCHING
        await orch.shutdown(down=True)
        assert await switching is False
        assert not world.alive and services.down_calls == ["other"]

    asyncio.run(scenario(config))


def test_switches_are_served_one_at_a_time(config: Config) -> None:
    """Two switches requested together run in order; the last one wins."""

    async def scenario(config: Config) -> None:
        world, services = World(), FakeServices()
        orch = make_orchestrator(config, world, services)
        assert await orch.enter_initial()
        a = asyncio.ensure_future(orch.switch("other"))
        b = asyncio.ensure_future(orch.switch("skeleton"))
        assert await a and await b
        assert orch.stack_name == "skeleton" and orch.stack_state == StackState.RUNNING
        assert services.up_calls == [
            ("skeleton", None),
            ("other", "skeleton"),
            ("skeleton", "other"),
        ]
        assert len(world.alive) == 1
        await orch.shutdown(down=False)
        assert not world.alive

    asyncio.run(scenario(config))


def test_a_failed_service_leaves_the_host_binary_running_degraded(config: Config) -> None:
    """Services that fail: the host binary still runs, the stack is degraded with the reason."""

    async def scenario(config: Config) -> None:
        world, services = World(), FakeServices()
        services.fail = "service postgres is unhealthy"
        orch = make_orchestrator(config, world, services)
        assert not await orch.enter_initial()
        assert orch.stack_state == StackState.DEGRADED
        assert orch.stack_error == "service postgres is unhealthy"
        assert orch.platform.state == PlatformState.RUNNING and len(world.alive) == 1
        await orch.shutdown(down=False)
        await settle()
        assert not world.alive

    asyncio.run(scenario(config))
