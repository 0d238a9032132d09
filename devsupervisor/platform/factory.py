"""Which platform target a stack runs: the host binary or the compose container."""

from __future__ import annotations

from collections.abc import Callable

from devsupervisor.config.model import Config
from devsupervisor.platform.binary import BinaryTarget
from devsupervisor.platform.listeners import Listeners
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.stack.services import StackServices


def make_target(
    config: Config,
    stack: str,
    services: StackServices,
    listeners: Listeners,
    on_output: Callable[[str], None],
) -> PlatformTarget:
    """The platform target for `stack`'s mode under `config`. `listeners`: the daemon's held
    `listen` sockets (a container target frees them before it publishes the same port)."""
    binary = config.platform.binary
    if config.stacks[stack].platform == "binary":
        assert binary is not None, "validation requires platform.binary for binary stacks"
        return BinaryTarget(binary, on_output=on_output, listeners=listeners)
    container = config.platform.container
    assert container is not None, "validation requires platform.container for those stacks"
    # The docker SDK loads only when a stack runs the platform as a container.
    from devsupervisor.platform.container import ContainerTarget  # noqa: PLC0415

    assert services.deps is not None, "a container stack has compose files"
    return ContainerTarget(
        services.compose_for(stack),
        container.service,
        events=services.deps.events,
        prebuild=container.prebuild,
        workdir=binary.workdir if binary is not None else None,
        on_output=on_output,
        build_timeout=config.platform.build_timeout,
        listeners=listeners,
    )
