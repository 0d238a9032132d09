"""Fast tier: the platform container's readiness waits on the project's one event stream.

The compose CLI is a fake `docker` on PATH that succeeds at once; the SDK client is a fake
with the two calls ContainerTarget makes (the container lookup and its inspect).
"""

from __future__ import annotations

import asyncio
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from devsupervisor.platform.container import ContainerTarget
from devsupervisor.platform.ready import NotReady
from devsupervisor.stack.compose import Compose, ComposeFiles
from devsupervisor.stack.docker_events import ContainerEvent
from devsupervisor.stack.event_bus import ContainerEvents

CID = "ab" * 32
# The class below has a method named `list`: annotations there cannot say list[...].
_Argv = list[str]
_Argvs = list[_Argv]


@dataclass
class _Container:
    id: str


@dataclass
class FakeClient:
    """What ContainerTarget asks the SDK: containers.list and api.inspect_container."""

    state: dict[str, Any] = field(default_factory=dict)
    # The container's healthcheck `Test` (None: none configured) and what running it exits with.
    test: list[str] | None = None
    probe_exit: int = 1
    probes: _Argvs = field(default_factory=list)

    @property
    def containers(self) -> FakeClient:
        return self

    @property
    def api(self) -> FakeClient:
        return self

    def list(self, filters: dict[str, Any], all: bool = False) -> list[_Container]:
        return [_Container(CID)]

    def inspect_container(self, container: str) -> dict[str, Any]:
        config = {} if self.test is None else {"Healthcheck": {"Test": self.test}}
        return {"State": self.state, "Config": config}

    def exec_create(self, container: str, cmd: _Argv, **kw: Any) -> dict[str, str]:
        self.probes.append(cmd)
        return {"Id": "exec1"}

    def exec_start(self, exec_id: str) -> bytes:
        return b""

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"ExitCode": self.probe_exit}


@pytest.fixture
def compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Compose:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (tmp_path / "docker-compose.yaml").write_text("services: {}\n")
    model = ComposeFiles("tproj", (tmp_path / "docker-compose.yaml",))
    return Compose(model, on_line=lambda line: None, timeout=5)


def _target(compose: Compose, events: ContainerEvents, client: FakeClient) -> ContainerTarget:
    return ContainerTarget(
        compose,
        "platform",
        events=events,
        prebuild=None,
        workdir=None,
        on_output=lambda line: None,
        client_factory=lambda: client,  # type: ignore[arg-type,return-value]
    )


def _health(health: str, cid: str = CID) -> ContainerEvent:
    return ContainerEvent("health_status", cid, "platform", time=0.0, health=health)


def _run_ready(
    compose: Compose,
    state: dict[str, Any],
    *later: ContainerEvent,
    client: FakeClient | None = None,
) -> None:
    """start(), then wait_ready() while `later` events arrive on the stream."""

    async def body() -> None:
        events = ContainerEvents()
        events.subscribed()
        target = _target(compose, events, client or FakeClient(state))
        await target.start()
        assert target.container == CID
        loop = asyncio.get_running_loop()
        for i, event in enumerate(later):
            loop.call_later(0.01 * (i + 1), events.publish, event)
        await target.wait_ready()

    asyncio.run(body())


STARTING = {"Running": True, "Health": {"Status": "starting"}}


def test_healthy_event_makes_it_ready(compose: Compose) -> None:
    """Starting at the inspect, then `health_status: healthy` on the stream: ready."""
    other = _health("healthy", cid="cd" * 32)
    _run_ready(compose, STARTING, other, _health("healthy"))


def test_healthy_or_unchecked_at_the_inspect_is_ready_at_once(compose: Compose) -> None:
    """Healthy before the subscription (or no healthcheck and running): ready without an event."""
    _run_ready(compose, {"Running": True, "Health": {"Status": "healthy"}})
    _run_ready(compose, {"Running": True})


def test_passing_early_probe_is_ready_without_an_event(compose: Compose) -> None:
    """Still starting at the inspect: its own healthcheck, run once, passes: ready at once."""
    client = FakeClient(STARTING, test=["CMD", "/platform", "-healthcheck"], probe_exit=0)
    _run_ready(compose, STARTING, client=client)
    assert client.probes == [["/platform", "-healthcheck"]]


def test_failing_early_probe_leaves_it_to_dockers_probes(compose: Compose) -> None:
    """The early probe fails (not listening yet): Docker's `healthy` event decides."""
    client = FakeClient(STARTING, test=["CMD-SHELL", "curl -f localhost"], probe_exit=1)
    _run_ready(compose, STARTING, _health("healthy"), client=client)
    assert client.probes == [["/bin/sh", "-c", "curl -f localhost"]]
    with pytest.raises(NotReady, match="is unhealthy"):
        _run_ready(compose, STARTING, _health("unhealthy"), client=client)


@pytest.mark.parametrize(
    ("state", "later", "message"),
    [
        (
            STARTING,
            [ContainerEvent("die", CID, "platform", 0.0, exit_code=2)],
            "exited with code 2",
        ),
        (STARTING, [_health("unhealthy")], "is unhealthy"),
        ({"Running": False, "ExitCode": 1}, [], "exited with code 1"),
    ],
)
def test_death_or_unhealth_is_not_ready(
    compose: Compose, state: dict[str, Any], later: list[ContainerEvent], message: str
) -> None:
    """A die or unhealthy (on the stream or already at the inspect) is NotReady with the reason."""
    with pytest.raises(NotReady, match=message):
        _run_ready(compose, state, *later)


def test_lost_stream_is_not_ready_at_once_and_leaves_no_thread(compose: Compose) -> None:
    """The engine lost while waiting: NotReady right away, and no worker thread stays behind."""
    before = set(threading.enumerate())

    async def body() -> None:
        events = ContainerEvents()
        events.subscribed()
        target = _target(compose, events, FakeClient(STARTING))
        await target.start()
        asyncio.get_running_loop().call_later(0.05, events.lost, "connection refused")
        await asyncio.wait_for(target.wait_ready(), 5)

    with pytest.raises(NotReady, match="connection refused"):
        asyncio.run(body())
    assert set(threading.enumerate()) <= before


def test_build_past_its_timeout_fails_with_the_reason(compose: Compose, tmp_path: Path) -> None:
    """A prebuild that never ends: the build fails after build_timeout, its tree killed."""
    target = ContainerTarget(
        compose,
        "platform",
        events=ContainerEvents(),
        prebuild="sleep 300 & wait",
        workdir=tmp_path,
        on_output=lambda line: None,
        build_timeout=0.3,
    )
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = asyncio.run(target.build(lambda line: None))
    assert not result.ok
    assert "build timed out after 0.3s" in (result.error_tail or "")
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before
