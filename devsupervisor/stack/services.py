"""The compose side of the stack as one face for the stack owner (`orchestrator.py`): bring a
stack's services up (healthy where they have a healthcheck), apply only the difference on a
switch, restart one, take it down, and report their status and Docker's availability.

Behind it: `StackManager` runs the compose CLI; `DockerWatch` follows Docker's event stream and
applies the restart policy. A config with no compose files in any stack needs neither: then
every call is a cheap no-op and the docker SDK is never imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from devsupervisor.config.model import Config
from devsupervisor.stack.compose import UP_TIMEOUT
from devsupervisor.stack.manager import StackManager
from devsupervisor.status_types import DockerStatus, ServiceStatus

if TYPE_CHECKING:
    from devsupervisor.stack.compose import Compose
    from devsupervisor.stack.docker_watch import DockerWatch


def uses_compose(config: Config) -> bool:
    return any(config.compose_files(s) for s in config.stacks)


class StackServices:
    def __init__(
        self,
        config: Config,
        *,
        on_output: Callable[[str], None],
        on_platform_died: Callable[[str, int | None], None],
        on_dependency_restarted: Callable[[str], None],
        on_lost: Callable[[str], None],
        on_back: Callable[[], Coroutine[Any, Any, None]],
        before_up: Callable[[Compose, list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._on_output = on_output
        # A remote engine forwards the stack's ports and reports its bind mounts here.
        self._before_up = before_up
        self.manager = StackManager(config, on_output=on_output)
        self.deps: DockerWatch | None = None
        if uses_compose(config):
            # Imported here: a stack without compose files never loads the docker SDK.
            from devsupervisor.stack.docker_watch import DockerWatch  # noqa: PLC0415

            self.deps = DockerWatch(
                config,
                platform_service=self.manager.platform_service,
                on_platform_died=on_platform_died,
                on_dependency_restarted=on_dependency_restarted,
                on_lost=on_lost,
                on_back=on_back,
            )

    def configure(self, config: Config) -> None:
        """A live config reload: compose models and the restart policy follow the new config."""
        self.manager = StackManager(config, on_output=self._on_output)
        if self.deps is not None:
            self.deps.supervisor.deps = config.dependencies

    @property
    def platform_service(self) -> str:
        return self.manager.platform_service

    def compose_for(self, stack: str) -> Compose:
        return self.manager.compose_for(stack)

    def start(self) -> None:
        """Start following Docker's events (no-op without compose files)."""
        if self.deps is not None:
            self.deps.start()

    async def stop(self) -> None:
        if self.deps is not None:
            await self.deps.stop()

    async def services_of(self, stack: str) -> list[str]:
        return await self.manager.services_of(stack)

    def forget_models(self) -> None:
        self.manager.forget_models()

    async def bring_up(
        self,
        stack: str,
        previous: str | None,
        *,
        alongside: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`up` the stack's services (compose recreates only what changed) and wait until they
        are healthy. `alongside` runs once their `up` returned, while their health is awaited
        (the platform container's creation); it must not raise, and is awaited either way.

        Raises:
            DevsupError: a service did not come up; what already runs is left running.
        """
        services = await self.manager.services_of(stack)
        if self.deps is not None:
            # Supervise the new set before the old one's extra services are removed, so their
            # removal is not taken for crashes.
            self.deps.supervisor.set_services(services)
        if self._before_up is not None:
            # What will publish ports: the services, and the platform when it is a container.
            config = self.manager.config
            platform = (
                [self.platform_service] if config.stacks[stack].platform == "container" else []
            )
            await self._before_up(self.compose_for(stack), [*services, *platform])
        await self.manager.bring_up(stack, previous, wait=self.deps is None)
        # After the services' `up`, never beside it: two compose runs on one project race
        # (both would create a missing network).
        side = asyncio.ensure_future(alongside()) if alongside is not None else None
        try:
            if self.deps is not None:
                found = await self.deps.wait_up(services, UP_TIMEOUT)
                await self.deps.reconcile(services, found)
        except asyncio.CancelledError:
            if side is not None:
                side.cancel()  # shutdown: its compose child is killed with it
            raise
        finally:
            if side is not None:
                await asyncio.wait({side})

    async def restart_service(self, name: str) -> ServiceStatus:
        assert self.deps is not None, "services exist only with compose files"
        await self.deps.restart_service(name)
        return next(s for s in self.status() if s["name"] == name)

    async def down(self, stack: str) -> None:
        await self.manager.down(stack)

    def status(self) -> list[ServiceStatus]:
        if self.deps is None:
            return []
        return cast(list[ServiceStatus], self.deps.supervisor.status())

    def docker_status(self) -> DockerStatus:
        if self.deps is None:
            return {"available": False, "error": None}
        return {"available": self.deps.available, "error": self.deps.error}
