"""Real tier: DockerEventSource + ServiceSupervisor + SDK restarts against demo stand-ins.

`LiveSupervisor` is a small stand-in for the daemon's wiring (not the daemon): an asyncio loop in
a thread owns the supervisor, the events thread feeds it, and restarts are real `docker restart`
calls through `asyncio.to_thread`. The test thread only asks the loop for status.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import docker
import pytest
from structlog.testing import capture_logs

from devsupervisor.config.model import BackoffConfig, DependenciesConfig, GiveUpConfig
from devsupervisor.stack.docker_events import (
    ContainerEvent,
    DockerEventSource,
    list_containers,
    restart_container,
)
from devsupervisor.stack.health import ServiceSupervisor
from tests.docker_env import (
    ComposeProject,
    compose_project,
    demo_images,
    docker_engine,
    run,
    wait_until,
)

__all__ = ["compose_project", "demo_images", "docker_engine"]  # fixtures used by name

T = TypeVar("T")
# Grace `docker restart` gives a stand-in; it stops on SIGTERM at once, so this never runs out.
RESTART_TIMEOUT = 2.0
# A stand-in turns unhealthy ~2 s after /fail (1 s interval, 2 retries) and healthy within ~1 s
# of a restart; 30 s is generous on a loaded machine.
HEALTH_DEADLINE = 30.0


class LiveSupervisor:
    """The supervisor on its own loop thread, fed by a real events subscription."""

    def __init__(self, project: str, services: tuple[str, ...], deps: DependenciesConfig) -> None:
        self.project = project
        self.loop = asyncio.new_event_loop()
        self.client = docker.from_env()
        self.issued: list[tuple[str, str, float]] = []  # (service, reason, wall time issued)
        self.events: list[ContainerEvent] = []
        self.restarted: list[str] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.sup: ServiceSupervisor = self.call(
            lambda: ServiceSupervisor(
                deps, restart=self._restart, on_restarted=self.restarted.append
            )
        )
        self.call(lambda: self.sup.set_services(services))
        self.source = DockerEventSource(
            project, loop=self.loop, on_event=self._on_event, on_lost=print, on_back=print
        )
        self.source.start()
        if not self.source.wait_subscribed(10):
            pytest.fail("docker events subscription did not start", pytrace=False)

    async def _restart(self, service: str, reason: str) -> None:
        self.issued.append((service, reason, time.time()))
        container = self.sup.container_of(service)
        if container is None:
            raise RuntimeError(f"no container known for {service}")
        await asyncio.to_thread(restart_container, self.client, container, RESTART_TIMEOUT)

    def _on_event(self, event: ContainerEvent) -> None:
        self.events.append(event)
        self.sup.handle(event)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run fn on the loop (where the supervisor lives) and return its result."""

        async def body() -> T:
            return fn()

        future: Future[T] = asyncio.run_coroutine_threadsafe(body(), self.loop)
        return future.result(timeout)

    def reconcile(self) -> list[str]:
        containers = list_containers(self.client, self.project)
        return self.call(lambda: self.sup.reconcile(containers))

    def status(self, service: str) -> dict[str, Any]:
        entries = self.call(self.sup.status)
        return next(e for e in entries if e["name"] == service)

    def unhealthy_event_times(self, service: str) -> list[float]:
        return [
            e.time
            for e in list(self.events)
            if e.service == service and e.action == "health_status" and e.health == "unhealthy"
        ]

    def close(self) -> None:
        self.source.stop()

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self.client.close()


@pytest.fixture
def live_factory(compose_project: ComposeProject) -> Iterator[Callable[..., LiveSupervisor]]:
    made: list[LiveSupervisor] = []

    def make(services: tuple[str, ...], deps: DependenciesConfig) -> LiveSupervisor:
        live = LiveSupervisor(compose_project.name, services, deps)
        made.append(live)
        return live

    try:
        yield make
    finally:
        for live in made:
            live.close()


def post(port: str, path: str) -> None:
    """POST to a stand-in's published port on 127.0.0.1."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def up(project: ComposeProject, *services: str, wait: bool = True) -> None:
    result = project.compose("up", "-d", *(["--wait"] if wait else []), *services)
    assert result.returncode == 0, result.stderr


def container_state(project: ComposeProject, service: str) -> str:
    cid = project.container_id(service)
    return run(["docker", "inspect", "-f", "{{.State.Status}}", cid], timeout=30).stdout.strip()


DEPS = DependenciesConfig(
    restart_unhealthy=True,
    backoff=BackoffConfig(initial=0.2, max=1.0),
    give_up_after=GiveUpConfig(restarts=3, within=120.0),
)


@pytest.mark.docker
def test_unhealthy_standin_is_restarted_and_healthy_again(
    compose_project: ComposeProject, live_factory: Callable[..., LiveSupervisor]
) -> None:
    """POST /fail makes redpanda unhealthy; it is restarted at once and is healthy again."""
    up(compose_project, "redpanda")
    live = live_factory(("redpanda",), DEPS)
    assert live.reconcile() == []
    before = compose_project.container_id("redpanda")
    with capture_logs() as logs:
        post(compose_project.env["DEMO_REDPANDA_PORT"], "/fail")
        wait_until(lambda: len(live.issued) == 1, timeout=HEALTH_DEADLINE, what="a restart")
        wait_until(
            lambda: live.status("redpanda")["state"] == "running",
            timeout=HEALTH_DEADLINE,
            what="redpanda running and healthy again",
        )
    status = live.status("redpanda")
    assert (status["health"], status["restarts"]) == ("healthy", 1)
    assert status["container"] == before[:12], "restarted in place, not recreated"
    assert compose_project.health("redpanda") == "healthy"
    assert live.issued[0][1] == "unhealthy"
    latency = live.issued[0][2] - live.unhealthy_event_times("redpanda")[0]
    assert latency < 1.0, f"restart issued {latency:.3f}s after the unhealthy event"
    names = [r["event"] for r in logs]
    assert names.index("service.unhealthy") < names.index("service.restarted")
    assert live.restarted == ["redpanda"]


@pytest.mark.docker
def test_killed_process_is_started_again(
    compose_project: ComposeProject, live_factory: Callable[..., LiveSupervisor]
) -> None:
    """A stand-in whose process is SIGKILLed from the host (as the OOM killer does) comes back."""
    up(compose_project, "postgres")
    live = live_factory(("postgres",), DEPS)
    live.reconcile()
    cid = compose_project.container_id("postgres")
    pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", cid], timeout=30).stdout)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(live.issued) == 1, timeout=HEALTH_DEADLINE, what="a restart")
    wait_until(
        lambda: live.status("postgres")["state"] == "running",
        timeout=HEALTH_DEADLINE,
        what="postgres running again",
    )
    assert live.issued[0][1] == "exited with code 137"
    assert container_state(compose_project, "postgres") == "running"
    assert live.status("postgres")["restarts"] == 1


@pytest.mark.docker
def test_manual_stop_and_docker_kill_stay_stopped(
    compose_project: ComposeProject, live_factory: Callable[..., LiveSupervisor]
) -> None:
    """`docker stop` and `docker kill` stay stopped; `compose start` in between clears the mark."""
    up(compose_project, "postgres")
    live = live_factory(("postgres",), DEPS)
    live.reconcile()
    cid = compose_project.container_id("postgres")

    def seen(action: str, count: int) -> Callable[[], bool]:
        return lambda: sum(e.action == action for e in list(live.events)) >= count

    assert run(["docker", "stop", cid], timeout=60).returncode == 0
    # The `stop` event comes after the `die`: had the die led to a restart, it is issued by now.
    wait_until(seen("stop", 1), timeout=HEALTH_DEADLINE, what="the stop event")
    assert live.status("postgres")["state"] == "stopped"
    assert live.issued == []
    assert container_state(compose_project, "postgres") == "exited"

    assert compose_project.compose("start", "postgres").returncode == 0
    wait_until(
        lambda: live.status("postgres")["state"] == "running",
        timeout=HEALTH_DEADLINE,
        what="postgres running after compose start",
    )
    assert run(["docker", "kill", cid], timeout=60).returncode == 0
    wait_until(seen("die", 2), timeout=HEALTH_DEADLINE, what="the second die event")
    # The die is handled on the loop right after it is recorded; status() runs on the loop
    # after that handling.
    assert live.status("postgres")["state"] == "stopped"
    assert live.issued == []
    assert container_state(compose_project, "postgres") == "exited"
    assert live.reconcile() == [], "a manual stop is not brought up by a reconcile"


@pytest.mark.docker
def test_always_failing_standin_gives_up(
    compose_project: ComposeProject, live_factory: Callable[..., LiveSupervisor]
) -> None:
    """A stand-in that never passes its healthcheck reaches gave_up after give_up_after restarts."""
    compose_project.env["DEMO_POSTGRES_FAIL_HEALTH"] = "1"
    up(compose_project, "postgres", wait=False)
    deps = DependenciesConfig(
        backoff=BackoffConfig(initial=0.2, max=0.5),
        give_up_after=GiveUpConfig(restarts=2, within=300.0),
    )
    live = live_factory(("postgres",), deps)
    live.reconcile()
    with capture_logs() as logs:
        wait_until(
            lambda: live.status("postgres")["state"] == "gave_up",
            timeout=4 * HEALTH_DEADLINE,
            what="postgres gave_up",
        )
    assert len(live.issued) == 2
    assert live.status("postgres")["restarts"] == 2
    gave_up = [r for r in logs if r["event"] == "service.gave_up"]
    assert len(gave_up) == 1 and gave_up[0]["restarts"] == 2
    # Given up means left alone: the still-unhealthy container is not restarted again.
    assert live.call(lambda: len(live.issued)) == 2
    assert compose_project.health("postgres") == "unhealthy"
