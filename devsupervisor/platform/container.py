"""The platform as a compose container: host prebuild, image build, recreate only it.

Readiness comes from Docker's own signals (the container's health status, read from the
engine's event stream), not from probing the published port: right after a recreate the
port-forwarder accepts connections it cannot yet deliver, and a probe stalls about a second.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

from devsupervisor.config.model import PlatformMode
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.build import BuildResult, run_command
from devsupervisor.platform.ready import NotReady
from devsupervisor.platform.target import ExitSink, LineSink
from devsupervisor.stack.compose import Compose

log = get_logger()

# A container without a healthcheck is ready once running; one with a healthcheck gets this
# long to report healthy (start periods of real services are tens of seconds).
READY_TIMEOUT = 120.0


class ContainerTarget:
    mode: PlatformMode = "container"
    # `up -d --no-deps` replaces the old container itself: no separate stop before the start.
    recreates_in_place = True

    def __init__(
        self,
        compose: Compose,
        service: str,
        *,
        prebuild: str | None,
        workdir: Path | None,
        on_output: LineSink,
    ) -> None:
        self._compose = compose
        self._service = service
        self._prebuild = prebuild
        self._workdir = workdir
        self._on_output = on_output
        self._container: str | None = None
        self._up_since: float = 0.0
        self._exit_sink: ExitSink = lambda code: None
        self._client: Any = None

    def _docker(self) -> Any:
        if self._client is None:
            self._client = docker.from_env()
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

    def is_running(self) -> bool:
        return self._container is not None

    def has_artefact(self) -> bool:
        return True  # whether the image is current is the daemon's fingerprint decision

    async def build(self, on_line: LineSink) -> BuildResult:
        output: list[str] = []
        started = time.monotonic()
        if self._prebuild:
            pre = await run_command(
                self._prebuild, cwd=str(self._workdir or os.getcwd()), on_line=on_line
            )
            output += pre.output
            if not pre.ok:
                return pre
        image = await self._compose.build(self._service)
        return BuildResult(
            image.ok, image.exit_code, time.monotonic() - started, (*output, *image.output)
        )

    async def start(self) -> None:
        self._up_since = time.time()
        # The recreate kills the old container: its `die` must not look like our crash.
        self._container = None
        await self._compose.up([self._service], wait=False, no_deps=True)
        self._container = await asyncio.to_thread(self._find_container)
        log.debug("platform.container", container=self._container, service=self._service)

    def _find_container(self) -> str | None:
        labels = [
            f"com.docker.compose.project={self._compose.model.project}",
            f"com.docker.compose.service={self._service}",
        ]
        found = self._docker().containers.list(filters={"label": labels})
        return str(found[0].id) if found else None

    async def wait_ready(self) -> None:
        container = self._container
        if container is None:
            raise NotReady(f"no container for service {self._service}")
        try:
            await asyncio.wait_for(asyncio.to_thread(self._wait_healthy, container), READY_TIMEOUT)
        except TimeoutError:
            raise NotReady(f"{self._service} not healthy after {READY_TIMEOUT:g}s") from None

    def _wait_healthy(self, container: str) -> None:
        """Block until the container is healthy (or running, without a healthcheck)."""
        client = self._docker()
        since = int(self._up_since) - 1
        events = client.events(
            since=since,
            filters={"container": container, "event": ["health_status", "die"]},
            decode=True,
        )
        try:
            if self._is_healthy_now(container):
                return
            for event in events:
                status = str(event.get("status") or event.get("Action") or "")
                if status.startswith("health_status: healthy"):
                    return
                if status == "die" or status.startswith("health_status: unhealthy"):
                    raise NotReady(f"{self._service} {status}")
        except docker.errors.DockerException as exc:
            raise NotReady(f"{self._service}: {exc}") from exc

    def _is_healthy_now(self, container: str) -> bool:
        state = self._docker().api.inspect_container(container)["State"]
        health = state.get("Health")
        if health is None:
            return bool(state.get("Running"))
        return bool(health.get("Status") == "healthy")

    async def stop(self) -> None:
        await self._compose.remove([self._service])
        self._container = None
