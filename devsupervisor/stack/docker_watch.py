"""The daemon's Docker side: one event subscription for the project, the restart policy for the
chosen stack's services (`health.ServiceSupervisor`), and what happens when the engine goes away
and comes back.

Events reach the loop from the docker events thread (`docker_events.DockerEventSource`); the
platform's own container is not a dependency: its unexpected exits go to the platform supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import docker
import docker.errors

from devsupervisor.config.model import Config
from devsupervisor.errors import ComposeError, DockerUnavailable
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack.docker_events import (
    ContainerEvent,
    DockerEventSource,
    list_containers,
    restart_container,
)
from devsupervisor.stack.health import KILL_WINDOW, ServiceSupervisor

log = get_logger()

# Grace for a dependency's `docker restart`: enough for Postgres to checkpoint.
RESTART_GRACE = 10.0


class Dependencies:
    def __init__(
        self,
        config: Config,
        *,
        platform_service: str,
        on_platform_died: Callable[[str, int | None], None],
        on_dependency_restarted: Callable[[str], None],
        on_lost: Callable[[str], None],
        on_back: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.config = config
        self._platform_service = platform_service
        self._on_platform_died = on_platform_died
        self._on_lost_cb = on_lost
        self._on_back_cb = on_back
        self.available = True
        self.error: str | None = None
        self._client: Any = None
        self._kills: dict[str, float] = {}
        self.supervisor = ServiceSupervisor(
            config.dependencies, restart=self._restart, on_restarted=on_dependency_restarted
        )
        self._source: DockerEventSource | None = None
        # Set on every container event: `wait_up` re-checks then, instead of polling.
        self._changed = asyncio.Event()
        # The last failure Docker reported per service (unhealthy, non-zero exit). The listing
        # alone can miss one: the restart policy may already have restarted the container.
        self._failures: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._source = DockerEventSource(
            self.config.project,
            loop=asyncio.get_running_loop(),
            on_event=self._on_event,
            on_lost=self._on_lost,
            on_back=self._on_back,
        )
        self._source.start()

    async def stop(self) -> None:
        if self._source is not None:
            await asyncio.to_thread(self._source.stop)
        if self._client is not None:
            self._client.close()

    def status(self) -> dict[str, Any]:
        return {"available": self.available, "error": self.error}

    def _docker(self) -> Any:
        if self._client is None:
            self._client = docker.from_env()
        return self._client

    # -- events (on the loop) ---------------------------------------------------------------

    def _on_event(self, event: ContainerEvent) -> None:
        self._changed.set()
        if event.action == "health_status" and event.health == "unhealthy":
            self._failures[event.service] = f"service {event.service} is unhealthy"
        elif event.action == "die" and event.exit_code not in (None, 0):
            self._failures[event.service] = (
                f"service {event.service} exited with code {event.exit_code}"
            )
        if event.service == self._platform_service:
            if event.action == "kill":
                self._kills[event.container_id] = time.monotonic()
            elif event.action == "die":
                killed = self._kills.pop(event.container_id, None)
                if killed is None or time.monotonic() - killed > KILL_WINDOW:
                    self._on_platform_died(event.container_id, event.exit_code)
            return
        self.supervisor.handle(event)

    def _on_lost(self, reason: str) -> None:
        self.available = False
        self.error = f"Docker engine not reachable: {reason}"
        log.warning("docker.lost", reason=reason)
        self.supervisor.docker_lost()
        self._on_lost_cb(self.error)

    def _on_back(self) -> None:
        self.available = True
        self.error = None
        log.info("docker.back")
        task = asyncio.get_running_loop().create_task(self._on_back_cb())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- actions ------------------------------------------------------------------------------

    async def reconcile(self, services: list[str]) -> list[str]:
        """Supervise `services` from now on; returns those down and not stopped on purpose."""
        self.supervisor.set_services(services)
        try:
            containers = await asyncio.to_thread(
                list_containers, self._docker(), self.config.project
            )
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine not reachable: {exc}") from exc
        return self.supervisor.reconcile(containers)

    async def wait_up(self, services: list[str], timeout: float) -> None:
        """Return once every service runs and is healthy (or has no healthcheck, or finished
        with exit code 0), re-checking on each container event.

        Raises:
            ComposeError: a service exited non-zero, turned unhealthy, or the timeout passed.
        """
        deadline = time.monotonic() + timeout
        for name in services:
            self._failures.pop(name, None)
        while True:
            self._changed.clear()
            failed = [self._failures[n] for n in services if n in self._failures]
            if failed:
                raise ComposeError(failed[0])
            try:
                found = await asyncio.to_thread(
                    list_containers, self._docker(), self.config.project
                )
            except docker.errors.DockerException as exc:
                raise DockerUnavailable(f"Docker engine not reachable: {exc}") from exc
            by_service = {c.service: c for c in found}
            waiting = []
            for name in services:
                info = by_service.get(name)
                if info is None or info.state in ("created", "restarting"):
                    waiting.append(name)
                elif info.state != "running":
                    if info.exit_code == 0:
                        continue
                    raise ComposeError(f"service {name} exited with code {info.exit_code}")
                elif info.health == "unhealthy":
                    raise ComposeError(f"service {name} is unhealthy")
                elif info.has_healthcheck and info.health != "healthy":
                    waiting.append(name)  # starting, or not yet reported at all
            if not waiting:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ComposeError(f"not healthy after {timeout:g}s: {', '.join(waiting)}")
            # Events wake us at once; the cap re-checks in case one was missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    async def restart_service(self, name: str) -> None:
        await self.supervisor.restart_now(name)

    async def _restart(self, name: str, reason: str) -> None:
        container = self.supervisor.container_of(name)
        if container is None:
            raise DockerUnavailable(f"no container for service {name}")
        await asyncio.to_thread(restart_container, self._docker(), container, RESTART_GRACE)
