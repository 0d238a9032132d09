"""The docker events thread and the SDK helpers: parsing (fast), then the real engine.

Engine loss is simulated without touching the engine: the source talks to Docker through a unix
socket proxy (`EngineProxy`) that the test cuts and restores, which ends the event stream and
refuses connections exactly as a stopped engine does, while the real engine keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from devsupervisor.backoff import BackoffPolicy
from devsupervisor.stack.docker_events import (
    ContainerEvent,
    DockerEventSource,
    list_containers,
    parse_event,
    restart_container,
)
from tests.docker_env import ComposeProject, compose_project, demo_images, docker_engine

__all__ = ["compose_project", "demo_images", "docker_engine"]  # fixtures used by name

ENGINE_SOCKET = "/var/run/docker.sock"
# docker-py's unix transport leaks the socket of a failed connect (engine away): harmless, but a
# ResourceWarning at garbage collection. Tests that make the engine unreachable collect it
# themselves (`collect_leaked_sockets`) under this filter, so it never lands in another test.
IGNORE_SDK_SOCKET_LEAK = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def collect_leaked_sockets() -> Iterator[None]:
    """Garbage-collect, at the end of the test, the sockets the SDK leaked on failed connects."""
    yield
    gc.collect()


def _raw(action: str, **attrs: str) -> dict[str, Any]:
    base = {"com.docker.compose.project": "p", "com.docker.compose.service": "postgres"}
    return {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": "abc123", "Attributes": {**base, "name": "p-postgres-1", **attrs}},
        "time": 1700000000,
        "timeNano": 1700000000123456789,
    }


def test_parse_health_status_splits_the_status() -> None:
    """`health_status: unhealthy` becomes action health_status with health unhealthy."""
    event = parse_event(_raw("health_status: unhealthy"))
    assert event == ContainerEvent(
        action="health_status",
        container_id="abc123",
        service="postgres",
        time=1700000000.1234567,
        health="unhealthy",
        name="p-postgres-1",
    )


def test_parse_die_and_kill_fields() -> None:
    """die carries its exit code, kill its signal."""
    die = parse_event(_raw("die", exitCode="137"))
    kill = parse_event(_raw("kill", signal="15"))
    assert die is not None and die.exit_code == 137 and die.signal is None
    assert kill is not None and kill.signal == "15" and kill.exit_code is None


def test_parse_ignores_exec_oneoff_and_unlabelled() -> None:
    """Healthcheck execs, `compose run` containers and non-service containers are dropped."""
    assert parse_event(_raw("exec_start: /standin healthcheck")) is None
    assert parse_event(_raw("die", **{"com.docker.compose.oneoff": "True"})) is None
    unlabelled = _raw("die")
    del unlabelled["Actor"]["Attributes"]["com.docker.compose.service"]
    assert parse_event(unlabelled) is None


# -- real engine ---------------------------------------------------------------------------------


class EngineProxy:
    """A unix socket forwarding to the engine's; `cut()` drops it, `restore()` brings it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def restore(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            _shut(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(ENGINE_SOCKET)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    _shut(dst)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def proxied_client(proxy: EngineProxy) -> Callable[[], docker.DockerClient]:
    """A client factory through the proxy. The API version is fixed: negotiating it in the
    constructor would fail while the proxy is cut and leak a socket nobody can close."""
    real = docker.from_env()
    version = real.api.api_version
    real.close()
    return lambda: docker.DockerClient(base_url=proxy.url, version=version)


class Recorder:
    """A loop in a thread receiving the source's callbacks, as the daemon's loop would."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.events: list[ContainerEvent] = []
        self.lost: list[str] = []
        self.back = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def on_event(self, event: ContainerEvent) -> None:
        self.events.append(event)

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)

    def on_back(self) -> None:
        self.back += 1

    def actions(self, service: str) -> list[str]:
        return [
            e.action if e.health is None else f"{e.action}:{e.health}"
            for e in list(self.events)
            if e.service == service
        ]

    def source(self, project: str, **kw: Any) -> DockerEventSource:
        return DockerEventSource(
            project,
            loop=self.loop,
            on_event=self.on_event,
            on_lost=self.on_lost,
            on_back=self.on_back,
            **kw,
        )

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env()
    try:
        yield c
    finally:
        c.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(0.02)


@pytest.mark.docker
def test_events_of_the_project_arrive_parsed(
    compose_project: ComposeProject, recorder: Recorder
) -> None:
    """Start, health and a docker stop of a real stand-in arrive in order, fields parsed."""
    source = recorder.source(compose_project.name)
    source.start()
    try:
        assert source.wait_subscribed(10), "never subscribed"
        up = compose_project.compose("up", "-d", "--wait", "postgres")
        assert up.returncode == 0, up.stderr
        wait_for(lambda: "health_status:healthy" in recorder.actions("postgres"), 30, "healthy")
        cid = compose_project.container_id("postgres")
        stop = compose_project.compose("stop", "postgres")
        assert stop.returncode == 0, stop.stderr
        wait_for(lambda: "stop" in recorder.actions("postgres"), 30, "the stop event")
    finally:
        source.stop()
    assert recorder.actions("postgres") == [
        "create",
        "start",
        "health_status:healthy",
        "kill",
        "die",
        "stop",
    ], "exec events of the healthcheck are filtered out at the engine"
    kill = next(e for e in recorder.events if e.action == "kill")
    die = next(e for e in recorder.events if e.action == "die")
    assert (kill.signal, die.exit_code, die.container_id) == ("15", 0, cid)
    assert abs(die.time - time.time()) < 60
    assert recorder.lost == [] and recorder.back == 0


@pytest.mark.docker
def test_stop_ends_the_thread_promptly(docker_engine: None, recorder: Recorder) -> None:
    """stop() while the thread blocks on an idle stream returns within a second."""
    source = recorder.source("devsup-test-idle-nothing-here")
    source.start()
    assert source.wait_subscribed(10)
    began = time.monotonic()
    source.stop()
    assert time.monotonic() - began < 1.0
    assert source._thread is not None and not source._thread.is_alive()
    assert not source.is_subscribed


@pytest.mark.docker
@IGNORE_SDK_SOCKET_LEAK
def test_engine_lost_and_back_replays_the_gap(
    compose_project: ComposeProject,
    recorder: Recorder,
    client: docker.DockerClient,
    collect_leaked_sockets: None,
) -> None:
    """Losing the engine reports lost once; back reports once and delivers the gap's events."""
    with tempfile.TemporaryDirectory(prefix="dsp") as tmp:
        proxy = EngineProxy(Path(tmp) / "docker.sock")
        proxy.restore()
        source = recorder.source(
            compose_project.name,
            client_factory=proxied_client(proxy),
            reconnect=BackoffPolicy(initial=0.05, max=0.2, restarts=None, within=60.0),
        )
        source.start()
        try:
            assert source.wait_subscribed(10)
            up = compose_project.compose("up", "-d", "--wait", "postgres")
            assert up.returncode == 0, up.stderr
            wait_for(lambda: "start" in recorder.actions("postgres"), 30, "the start event")
            proxy.cut()
            wait_for(lambda: len(recorder.lost) == 1, 10, "docker lost")
            # While the engine is "away": a stop the source cannot see live.
            client.api.stop(compose_project.container_id("postgres"), timeout=5)
            wait_for(lambda: len(recorder.lost) == 1 and not source.is_subscribed, 5, "retrying")
            proxy.restore()
            wait_for(lambda: recorder.back == 1, 10, "docker back")
            wait_for(lambda: "stop" in recorder.actions("postgres"), 10, "the gap's stop event")
        finally:
            source.stop()
            proxy.cut()
    assert len(recorder.lost) == 1 and recorder.back == 1
    actions = recorder.actions("postgres")
    assert actions.count("start") == 1, "no event delivered twice across the reconnect"
    assert actions[-3:] == ["kill", "die", "stop"]


@pytest.mark.docker
@IGNORE_SDK_SOCKET_LEAK
def test_unreachable_engine_at_start_is_lost_then_back(
    docker_engine: None, recorder: Recorder, collect_leaked_sockets: None
) -> None:
    """An engine missing when the source starts is reported lost, then back when it answers."""
    with tempfile.TemporaryDirectory(prefix="dsp") as tmp:
        proxy = EngineProxy(Path(tmp) / "docker.sock")
        source = recorder.source(
            "devsup-test-nothing",
            client_factory=proxied_client(proxy),
            reconnect=BackoffPolicy(initial=0.05, max=0.2, restarts=None, within=60.0),
        )
        source.start()
        try:
            wait_for(lambda: len(recorder.lost) == 1, 10, "docker lost")
            assert not source.is_subscribed
            proxy.restore()
            assert source.wait_subscribed(10)
            wait_for(lambda: recorder.back == 1, 10, "docker back")
        finally:
            source.stop()
            proxy.cut()
    assert len(recorder.lost) == 1


@pytest.mark.docker
def test_helpers_list_and_restart(
    compose_project: ComposeProject, client: docker.DockerClient
) -> None:
    """list_containers gives state and health; restart keeps the id and revives an exited one."""
    up = compose_project.compose("up", "-d", "--wait", "postgres", "redpanda")
    assert up.returncode == 0, up.stderr
    by_service = {c.service: c for c in list_containers(client, compose_project.name)}
    assert set(by_service) == {"postgres", "redpanda"}
    pg = by_service["postgres"]
    assert (pg.state, pg.health, pg.exit_code) == ("running", "healthy", None)
    assert pg.name == f"{compose_project.name}-postgres-1"

    restart_container(client, pg.id, timeout=5)
    again = {c.service: c for c in list_containers(client, compose_project.name)}["postgres"]
    assert again.id == pg.id and again.started_at != pg.started_at

    client.api.stop(pg.id, timeout=5)
    stopped = {c.service: c for c in list_containers(client, compose_project.name)}["postgres"]
    assert (stopped.state, stopped.exit_code) == ("exited", 0)
    restart_container(client, pg.id, timeout=5)
    wait_for(lambda: compose_project.health("postgres") == "healthy", 30, "healthy again")
