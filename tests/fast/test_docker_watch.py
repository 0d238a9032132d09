"""Fast tier: the stack's bring-up wait (`DockerWatch.wait_up`) on scripted listings and events.

No engine: the SDK client is a fake whose listing the test changes, and events are published on
the watch's bus as the events thread would deliver them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devsupervisor.config.model import (
    ComposeConfig,
    Config,
    PlatformConfig,
    StackConfig,
    WatchConfig,
)
from devsupervisor.errors import ComposeError, DockerUnavailable
from devsupervisor.stack.docker_events import PROJECT_LABEL, SERVICE_LABEL, ContainerEvent
from devsupervisor.stack.docker_watch import DockerWatch

PG = "a1" * 32
OLD_PG = "b2" * 32


@dataclass
class Listed:
    status: str = "running"
    health: str | None = "starting"  # None: no healthcheck
    exit_code: int = 0


class FakeEngine:
    """What a listing asks the SDK (`api.containers`, `api.inspect_container`), scripted."""

    def __init__(self) -> None:
        self.containers: dict[str, tuple[str, Listed]] = {}
        self.listed = threading.Event()  # set once a listing has read the state (in a worker)

    def list(self, **kw: Any) -> list[dict[str, Any]]:
        return [
            {"Id": cid, "Labels": {SERVICE_LABEL: svc, PROJECT_LABEL: "t"}}
            for cid, (svc, _) in self.containers.items()
        ]

    def inspect(self, cid: str) -> dict[str, Any]:
        _, listed = self.containers[cid]
        state: dict[str, Any] = {"Status": listed.status, "ExitCode": listed.exit_code}
        check: dict[str, Any] = {}
        if listed.health is not None:
            state["Health"] = {"Status": listed.health}
            check = {"Test": ["CMD", "true"]}
        self.listed.set()
        return {"Id": cid, "Name": "/t-x-1", "State": state, "Config": {"Healthcheck": check}}


class FakeClient:
    """The docker client's face that DockerWatch uses."""

    def __init__(self, engine: FakeEngine) -> None:
        self.api = SimpleNamespace(containers=engine.list, inspect_container=engine.inspect)

    def close(self) -> None:
        pass


def _config(tmp_path: Path) -> Config:
    return Config(
        project="t",
        compose=ComposeConfig(directory=tmp_path),
        stacks={"s": StackConfig(name="s")},
        default_stack="s",
        platform=PlatformConfig(watch=WatchConfig(paths=(tmp_path,))),
    )


def _watch(tmp_path: Path, fake: FakeEngine) -> DockerWatch:
    async def back() -> None:
        pass

    return DockerWatch(
        _config(tmp_path),
        platform_service="platform",
        on_platform_died=lambda cid, code: None,
        on_dependency_restarted=lambda name: None,
        on_lost=lambda reason: None,
        on_back=back,
        client_factory=lambda: FakeClient(fake),  # type: ignore[arg-type,return-value]
    )


def _event(action: str, cid: str = PG, **kw: Any) -> ContainerEvent:
    return ContainerEvent(action, cid, "postgres", time=0.0, **kw)


def _run_wait(
    tmp_path: Path,
    fake: FakeEngine,
    script: Callable[[DockerWatch], None],
    timeout: float = 5.0,
) -> None:
    """wait_up(["postgres"]), running `script` once its first listing has been read."""

    async def body() -> None:
        watch = _watch(tmp_path, fake)
        watch.events.subscribed()
        task = asyncio.ensure_future(watch.wait_up(["postgres"], timeout))
        assert await asyncio.to_thread(fake.listed.wait, 5), "no listing"
        script(watch)
        try:
            await task
        finally:
            await watch.stop()

    asyncio.run(body())


def test_returns_when_the_healthy_event_comes(tmp_path: Path) -> None:
    """Starting at the listing; healthy after the event: wait_up returns."""
    fake = FakeEngine()
    fake.containers[PG] = ("postgres", Listed())

    def turn_healthy(watch: DockerWatch) -> None:
        fake.containers[PG][1].health = "healthy"
        watch.events.publish(_event("health_status", health="healthy"))

    _run_wait(tmp_path, fake, turn_healthy)


def test_unhealthy_event_fails_even_if_the_listing_looks_fine(tmp_path: Path) -> None:
    """An unhealthy event fails the bring-up although the restart policy already restarted it."""
    fake = FakeEngine()
    fake.containers[PG] = ("postgres", Listed())

    def unhealthy(watch: DockerWatch) -> None:
        watch.events.publish(_event("health_status", health="unhealthy"))

    with pytest.raises(ComposeError, match="postgres is unhealthy"):
        _run_wait(tmp_path, fake, unhealthy)


def test_late_die_of_a_replaced_container_is_not_a_failure(tmp_path: Path) -> None:
    """The old container's `die` (compose recreated it) arrives late: ignored; healthy wins."""
    fake = FakeEngine()
    fake.containers[PG] = ("postgres", Listed())

    def late_die_then_healthy(watch: DockerWatch) -> None:
        watch.events.publish(_event("die", cid=OLD_PG, exit_code=137))
        fake.containers[PG][1].health = "healthy"
        watch.events.publish(_event("health_status", health="healthy"))

    _run_wait(tmp_path, fake, late_die_then_healthy)


def test_exited_non_zero_at_the_listing_fails_at_once(tmp_path: Path) -> None:
    """A service already exited non-zero: ComposeError naming it and its code."""
    fake = FakeEngine()
    fake.containers[PG] = ("postgres", Listed(status="exited", health=None, exit_code=3))
    with pytest.raises(ComposeError, match="postgres exited with code 3"):
        _run_wait(tmp_path, fake, lambda watch: None)


def test_timeout_names_who_is_still_waiting(tmp_path: Path) -> None:
    """Nothing turns healthy within the timeout: ComposeError naming the service."""
    fake = FakeEngine()
    fake.containers[PG] = ("postgres", Listed())
    with pytest.raises(ComposeError, match=r"not healthy after 0\.2s: postgres"):
        _run_wait(tmp_path, fake, lambda watch: None, timeout=0.2)


def test_lost_stream_ends_the_wait(tmp_path: Path) -> None:
    """The event stream lost during the wait: DockerUnavailable at once, not a timeout."""
    fake = FakeEngine()
    fake.containers[PG] = ("postgres", Listed())
    with pytest.raises(DockerUnavailable, match="gone"):
        _run_wait(tmp_path, fake, lambda watch: watch.events.lost("gone"), timeout=30)
