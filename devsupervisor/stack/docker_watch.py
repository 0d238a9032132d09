"""The daemon's Docker side: the one event stream of the project, the restart policy for the
chosen stack's services (`health.ServiceSupervisor`), and what happens when the engine goes away
and comes back.

Events reach the loop from the docker events thread (`docker_events.DockerEventSource`) and are
published on `events` (`event_bus.ContainerEvents`) for every waiter: the stack's bring-up here,
the platform container's readiness (`platform/container.py`). No other event stream is opened.
The platform's own container is not a dependency: its unexpected exits go to the platform.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import docker

from devsupervisor.config.model import Config
from devsupervisor.errors import ComposeError, DockerUnavailable
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack.docker_events import (
    SDK_TIMEOUT,
    ContainerEvent,
    ContainerInfo,
    DockerEventSource,
    docker_client,
    list_containers,
    restart_container,
    sdk_call,
)
from devsupervisor.stack.event_bus import ContainerEvents
from devsupervisor.stack.health import KILL_WINDOW, ServiceSupervisor

log = get_logger()

# Grace for a dependency's `docker restart`: enough for Postgres to checkpoint.
RESTART_GRACE = 10.0


class DockerWatch:
    """Owns the project's event stream and the supervision of its services. Loop-only."""

    def __init__(
        self,
        config: Config,
        *,
        platform_service: str,
        on_platform_died: Callable[[str, int | None], None],
        on_dependency_restarted: Callable[[str], None],
        on_lost: Callable[[str], None],
        on_back: Callable[[], Coroutine[Any, Any, None]],
        client_factory: Callable[[], docker.DockerClient] = docker_client,
    ) -> None:
        self.config = config
        self._platform_service = platform_service
        self._on_platform_died = on_platform_died
        self._on_lost_cb = on_lost
        self._on_back_cb = on_back
        self._client_factory = client_factory
        self.available = True
        self.error: str | None = None
        self.events = ContainerEvents()
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()  # the client is made in whichever worker needs it
        self._kills: dict[str, float] = {}
        self.supervisor = ServiceSupervisor(
            config.dependencies, restart=self._restart, on_restarted=on_dependency_restarted
        )
        self._source: DockerEventSource | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._source = DockerEventSource(
            self.config.instance_name,
            loop=asyncio.get_running_loop(),
            on_event=self._on_event,
            on_lost=self._on_lost,
            on_back=self._on_back,
            on_subscribed=self.events.subscribed,
            client_factory=self._client_factory,
        )
        self._source.start()

    async def stop(self) -> None:
        if self._source is not None:
            await asyncio.to_thread(self._source.stop)
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _docker(self) -> docker.DockerClient:
        """The loop side's client (called in workers only: making one may ask the engine)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    async def _list(self, timeout: float = SDK_TIMEOUT) -> list[ContainerInfo]:
        project = self.config.instance_name
        return await sdk_call(
            "a container listing",
            lambda: list_containers(self._docker(), project),
            timeout=timeout,
        )

    # -- events (on the loop) ---------------------------------------------------------------

    def _on_event(self, event: ContainerEvent) -> None:
        self.events.publish(event)
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
        self.events.lost(self.error)
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

    async def reconcile(
        self, services: list[str], found: list[ContainerInfo] | None = None
    ) -> list[str]:
        """Supervise `services` from now on; returns those down and not stopped on purpose.
        `found`: a listing just made (`wait_up`'s), saving another round of inspects.

        Raises:
            DockerUnavailable: the engine did not answer the listing.
        """
        self.supervisor.set_services(services)
        return self.supervisor.reconcile(await self._list() if found is None else found)

    async def wait_up(self, services: list[str], timeout: float) -> list[ContainerInfo]:
        """Return once every service runs and is healthy (or has no healthcheck, or finished
        with exit code 0), re-checking on each of their container events. Returns the listing
        that showed them up.

        Raises:
            ComposeError: a service exited non-zero, turned unhealthy, or the timeout passed.
            DockerUnavailable: the engine or its event stream went away meanwhile.
        """
        deadline = time.monotonic() + timeout
        wanted = set(services)
        await self.events.wait_live(timeout)
        # Subscribed before each listing, so an event between the listing and the wait is queued.
        with self.events.subscribe(lambda event: event.service in wanted) as sub:
            while True:
                remaining = deadline - time.monotonic()
                found = await self._list(min(SDK_TIMEOUT, max(remaining, 1.0)))
                waiting = _not_up(services, found)
                if not waiting:
                    return found
                try:
                    event = await sub.next(deadline - time.monotonic())
                except TimeoutError:
                    raise ComposeError(
                        f"not healthy after {timeout:g}s: {', '.join(waiting)}"
                    ) from None
                # The listing alone can miss a failure: a restart policy may already have
                # restarted the container by the time it is read. Only the listed containers
                # count: a late `die` of one that `up` replaced is not a failure.
                current = {info.id for info in found}
                for seen in (event, *sub.drain()):
                    if seen.container_id in current:
                        _raise_on_failure(seen)

    async def restart_service(self, name: str) -> None:
        await self.supervisor.restart_now(name)

    async def _restart(self, name: str, reason: str) -> None:
        container = self.supervisor.container_of(name)
        if container is None:
            raise DockerUnavailable(f"no container for service {name}")
        await sdk_call(
            f"a restart of {name}",
            lambda: restart_container(self._docker(), container, RESTART_GRACE),
            timeout=RESTART_GRACE + SDK_TIMEOUT,
        )


def _not_up(services: list[str], found: list[ContainerInfo]) -> list[str]:
    """The services still coming up.

    Raises:
        ComposeError: one exited non-zero or is unhealthy.
    """
    by_service = {c.service: c for c in found}
    waiting = []
    for name in services:
        info = by_service.get(name)
        if info is None or info.state in ("created", "restarting"):
            waiting.append(name)
        elif info.state != "running":
            if info.exit_code != 0:
                raise ComposeError(f"service {name} exited with code {info.exit_code}")
        elif info.health == "unhealthy":
            raise ComposeError(f"service {name} is unhealthy")
        elif info.has_healthcheck and info.health != "healthy":
            waiting.append(name)  # starting, or not yet reported at all
    return waiting


def _raise_on_failure(event: ContainerEvent) -> None:
    if event.action == "health_status" and event.health == "unhealthy":
        raise ComposeError(f"service {event.service} is unhealthy")
    if event.action == "die" and event.exit_code not in (None, 0):
        raise ComposeError(f"service {event.service} exited with code {event.exit_code}")
