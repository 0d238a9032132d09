"""The daemon's side of the command protocol (`control/api.py`): each action a command or the
dashboard can take, as a call on the stack owner, the platform owner or the log streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from devsupervisor.errors import UsageError
from devsupervisor.logs.broadcast import Broadcaster
from devsupervisor.logs.streams import LogStreams
from devsupervisor.orchestrator import Orchestrator
from devsupervisor.stack.services import StackServices
from devsupervisor.states import StackState
from devsupervisor.status_types import PlatformStatus, Status


class Actions:
    """Implements `control.api.Supervisor` for one daemon."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        services: StackServices,
        streams: LogStreams,
        *,
        status: Callable[[], Status],
        request_stop: Callable[[bool], bool],
    ) -> None:
        self._orchestrator = orchestrator
        self._services = services
        self._streams = streams
        self._status = status
        self._request_stop = request_stop

    def status(self) -> Status:
        return self._status()

    def stack_names(self) -> list[str]:
        return list(self._orchestrator.config.stacks)

    def is_current(self, stack: str) -> bool:
        orchestrator = self._orchestrator
        return stack == orchestrator.stack_name and orchestrator.stack_state == StackState.RUNNING

    async def switch(self, stack: str, *, wait: bool) -> bool | None:
        return await self._orchestrator.switch(stack, wait=wait)

    def stack_problem(self) -> str:
        orchestrator = self._orchestrator
        error = orchestrator.stack_error
        return orchestrator.summary() + (f" ({error})" if error else "")

    async def rebuild(self) -> bool:
        return await self._orchestrator.rebuild()

    def platform_status(self) -> PlatformStatus:
        return self._orchestrator.platform_status()

    async def restart(self, name: str) -> Any:
        return await self._orchestrator.restart(name)

    def pause(self) -> None:
        self._orchestrator.pause()

    def resume(self) -> None:
        self._orchestrator.resume()

    @property
    def events(self) -> Broadcaster[dict[str, Any]]:
        return self._streams.events

    def request_stop(self, *, down: bool = False) -> bool:
        return self._request_stop(down)

    async def read_logs(self, name: str, lines: int, *, follow: bool) -> Any:
        """Recent log lines of `platform`, `devsup` or a compose service; with `follow`, an
        async iterator that goes on with new ones.

        Raises:
            UsageError: no such log source in the current stack.
        """
        orchestrator = self._orchestrator
        if name == "platform" and orchestrator.platform.target.mode == "container":
            return await self._service_logs(self._services.platform_service, lines, follow)
        if name in self._streams.sources:
            return self._streams.read(name, lines, follow=follow)
        services = await self._services.services_of(orchestrator.stack_name)
        if name in services:
            return await self._service_logs(name, lines, follow)
        known = ", ".join([*self._streams.sources, *services])
        raise UsageError(f"no log source {name!r} (sources: {known})")

    async def _service_logs(self, service: str, lines: int, follow: bool) -> Any:
        compose = self._services.compose_for(self._orchestrator.stack_name)
        if not follow:
            return [{"source": service, "line": ln} for ln in await compose.logs(service, lines)]

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for line in compose.follow_logs(service, lines):
                yield {"source": service, "line": line}

        return stream()
