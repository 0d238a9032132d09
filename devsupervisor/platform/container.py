"""The platform as a compose container: host prebuild, image build, recreate only it.

Readiness comes from Docker's own signals (the container's health status, read from the
project's one event stream, `stack.event_bus.ContainerEvents`), not from probing the published
port: right after a recreate the port-forwarder accepts connections it cannot yet deliver, and a
probe stalls about a second. The one exception runs inside the container: its own healthcheck,
once, right after the start (Docker's first probe comes only one interval later).

On a switch into a container stack the container is created (`prepare`) while the stack's
services get healthy, so its start after them is one engine call, not a second compose run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from devsupervisor.config.model import PlatformMode
from devsupervisor.errors import DevsupError, DockerUnavailable
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.build import BuildResult, run_command
from devsupervisor.platform.listeners import Listeners
from devsupervisor.platform.ready import NotReady
from devsupervisor.platform.target import ExitSink, LineSink
from devsupervisor.stack.compose import Compose
from devsupervisor.stack.docker_events import SDK_TIMEOUT, ContainerEvent, docker_client, sdk_call
from devsupervisor.stack.event_bus import ContainerEvents

log = get_logger()

# Default deadline of a build (prebuild plus image build); config `platform.build_timeout`.
BUILD_TIMEOUT = 600.0
# A container without a healthcheck is ready once running; one with a healthcheck gets this
# long to report healthy (start periods of real services are tens of seconds).
READY_TIMEOUT = 120.0
# Longest the early run of the container's healthcheck may take before Docker's probes decide.
PROBE_TIMEOUT = 2.0


class ContainerTarget:
    mode: PlatformMode = "container"
    # `up -d --no-deps` replaces the old container itself: no separate stop before the start.
    recreates_in_place = True
    # The recreate replaces the container in one step: there is no second one to overlap.
    overlap_swap = False
    notify_status: str | None = None

    def fork(self) -> ContainerTarget:
        return self

    def __init__(
        self,
        compose: Compose,
        service: str,
        *,
        events: ContainerEvents,
        prebuild: str | None,
        workdir: Path | None,
        on_output: LineSink,
        build_timeout: float = BUILD_TIMEOUT,
        listeners: Listeners | None = None,
        client_factory: Callable[[], docker.DockerClient] = docker_client,
    ) -> None:
        """Args:
        events: the project's container events (`DockerWatch.events`): readiness waits on them.
        build_timeout: seconds prebuild and image build may take together; then the build
            fails with that reason (its process trees killed).
        client_factory: makes the SDK client for the container lookup and inspect.
        """
        self._compose = compose
        self._service = service
        self._events = events
        self._prebuild = prebuild
        self._workdir = workdir
        self._on_output = on_output
        self._build_timeout = build_timeout
        # The binary platform's held `listen` sockets: released before this container publishes.
        self._listeners = listeners
        self._container: str | None = None
        # Created by `prepare` for the next `start`, not started yet (None: start via compose).
        self._prepared: str | None = None
        self._exit_sink: ExitSink = lambda code: None
        self._client_factory = client_factory
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()  # made in whichever worker needs it first

    def _docker(self) -> docker.DockerClient:
        """Called in workers only: making a client may ask the engine for its API version."""
        with self._client_lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def set_exit_sink(self, sink: ExitSink) -> None:
        self._exit_sink = sink

    def container_exited(self, container_id: str, exit_code: int | None) -> None:
        """Told by the daemon's docker event handler: our container died on its own."""
        if container_id == self._container:
            self._container = None
            self._exit_sink(exit_code)

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container(self) -> str | None:
        return self._container

    @property
    def exit_code(self) -> int | None:
        return None

    def identity(self) -> None:
        return None  # a container is found again through compose, not by pid

    def is_running(self) -> bool:
        return self._container is not None

    def has_artefact(self) -> bool:
        return True  # whether the image is current is the daemon's fingerprint decision

    async def build(self, on_line: LineSink) -> BuildResult:
        # A container created before this build runs the old image: compose recreates it.
        self._prepared = None
        started = time.monotonic()
        output: list[str] = []
        try:
            async with asyncio.timeout(self._build_timeout):
                if self._prebuild:
                    pre = await run_command(
                        self._prebuild, cwd=str(self._workdir or os.getcwd()), on_line=on_line
                    )
                    output += pre.output
                    if not pre.ok:
                        return pre
                remaining = self._build_timeout - (time.monotonic() - started)
                image = await self._compose.build(self._service, timeout=max(remaining, 0.1))
        except TimeoutError:
            # Cancelled by the deadline: run_command killed the prebuild's tree on the way out.
            reason = f"build timed out after {self._build_timeout:g}s"
            return BuildResult(False, -1, time.monotonic() - started, (*output, reason))
        return BuildResult(
            image.ok, image.exit_code, time.monotonic() - started, (*output, *image.output)
        )

    async def start(self) -> None:
        # The recreate kills the old container: its `die` must not look like our crash.
        self._container = None
        # A host binary's held `listen` sockets would keep the port this container publishes;
        # the old binary has stopped by now, so closing devsup's copy frees it.
        if self._listeners is not None:
            self._listeners.update(())
        prepared, self._prepared = self._prepared, None
        if prepared is not None and await self._start_prepared(prepared):
            self._container = prepared
        else:
            await self._compose.up([self._service], wait=False, no_deps=True)
            self._container = await self._lookup(running=True)
        log.debug("platform.container", container=self._container, service=self._service)

    async def prepare(self) -> None:
        """Create the container without starting it (`up --no-start`), while the stack's
        services come up, so `start` is one engine call instead of a second compose run
        (a compose invocation costs about half a second). Only when the image is current and
        no platform container runs: creating would replace a running one. Never raises: a
        failed prepare leaves `start` to compose."""
        try:
            await self._compose.up([self._service], no_deps=True, start=False)
            self._prepared = await self._lookup(running=False)
        except (DevsupError, docker.errors.APIError) as exc:
            log.info("platform.prepare_failed", service=self._service, reason=str(exc))
            self._prepared = None
        log.debug("platform.prepared", container=self._prepared, service=self._service)

    async def discard_prepared(self) -> None:
        """The switch failed before the start: remove the created, never started container."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return
        try:
            await sdk_call(
                f"a removal of the created {self._service} container",
                lambda: self._docker().api.remove_container(prepared, force=True),
                timeout=SDK_TIMEOUT,
            )
        except (DevsupError, docker.errors.APIError) as exc:
            log.info("platform.discard_failed", container=prepared, reason=str(exc))

    async def _start_prepared(self, container: str) -> bool:
        """Start the container `prepare` created; False when the engine refuses (it was
        removed or replaced meanwhile): then compose starts the service."""
        try:
            await sdk_call(
                f"a start of the {self._service} container",
                lambda: self._docker().api.start(container),
                timeout=SDK_TIMEOUT,
            )
        except docker.errors.APIError as exc:
            log.info("platform.prepared_start_failed", container=container, reason=str(exc))
            return False
        return True

    async def _lookup(self, *, running: bool) -> str | None:
        """The id of the service's container (`running`: only a running one)."""
        labels = [
            f"com.docker.compose.project={self._compose.model.project}",
            f"com.docker.compose.service={self._service}",
        ]
        found = await sdk_call(
            f"a lookup of the {self._service} container",
            lambda: self._docker().containers.list(filters={"label": labels}, all=not running),
            timeout=SDK_TIMEOUT,
        )
        return str(found[0].id) if found else None

    async def wait_ready(self) -> None:
        """Return once the container is healthy (or running, without a healthcheck).

        Raises:
            NotReady: it died, turned unhealthy, or was not healthy within READY_TIMEOUT; or
                the engine (or its event stream) is not reachable.
        """
        container = self._container
        if container is None:
            raise NotReady(f"no container for service {self._service}")
        deadline = time.monotonic() + READY_TIMEOUT

        def about_it(event: ContainerEvent) -> bool:
            return event.container_id == container and event.action in ("health_status", "die")

        try:
            await self._events.wait_live(READY_TIMEOUT)
            # Subscribed before the inspect: whatever happens after it is queued for us.
            with self._events.subscribe(about_it) as sub:
                if await self._ready_now(container):
                    return
                while True:
                    event = await sub.next(deadline - time.monotonic())
                    if event.action == "die":
                        raise NotReady(f"{self._service} exited with code {event.exit_code}")
                    if event.health == "unhealthy":
                        raise NotReady(f"{self._service} is unhealthy")
                    if event.health == "healthy":
                        return
        except TimeoutError:
            raise NotReady(f"{self._service} not healthy after {READY_TIMEOUT:g}s") from None
        except (DockerUnavailable, docker.errors.APIError) as exc:
            raise NotReady(f"{self._service}: {exc}") from exc

    async def _ready_now(self, container: str) -> bool:
        """Whether it serves already; raises NotReady when it has already failed.

        An inspect, not an event: the container may have turned healthy (or died) before the
        subscription began. While its health is still `starting`, its own healthcheck is run
        once now: Docker runs the first probe only one `interval` after the start (20.10 has
        no start_interval), and a probe that passes is what Docker would report as healthy.
        """
        detail: dict[str, Any] = await sdk_call(
            f"an inspect of the {self._service} container",
            lambda: self._docker().api.inspect_container(container),
            timeout=SDK_TIMEOUT,
        )
        state: dict[str, Any] = detail.get("State") or {}
        if not state.get("Running"):
            raise NotReady(f"{self._service} exited with code {state.get('ExitCode')}")
        health = (state.get("Health") or {}).get("Status")
        if health == "unhealthy":
            raise NotReady(f"{self._service} is unhealthy")
        if health is None or health == "healthy":
            return True
        check = (detail.get("Config") or {}).get("Healthcheck") or {}
        return await self._probe(container, _probe_argv(check.get("Test") or []))

    async def _probe(self, container: str, argv: list[str] | None) -> bool:
        """Run the container's healthcheck command in it once; False when it fails or cannot
        run (then Docker's own probes decide)."""
        if argv is None:
            return False

        def run() -> int | None:
            api = self._docker().api
            exec_id = api.exec_create(container, argv)["Id"]
            api.exec_start(exec_id)  # attached to its output: returns when it has exited
            code: int | None = api.exec_inspect(exec_id).get("ExitCode")
            return code

        try:
            code = await sdk_call(f"a probe of {self._service}", run, timeout=PROBE_TIMEOUT)
        except (DockerUnavailable, docker.errors.APIError) as exc:
            log.debug("platform.probe_failed", service=self._service, reason=str(exc))
            return False
        log.debug("platform.probed", service=self._service, exit_code=code)
        return code == 0

    async def stop(self) -> None:
        await self._compose.remove([self._service])
        self._container = None
        # Its connection pool holds sockets; a later start makes a new client.
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _probe_argv(test: list[str]) -> list[str] | None:
    """The command of a healthcheck `Test` (`CMD args...` or `CMD-SHELL line`); None for
    none, `NONE` or an inherited one."""
    if len(test) >= 2 and test[0] == "CMD":
        return list(test[1:])
    if len(test) == 2 and test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return None
