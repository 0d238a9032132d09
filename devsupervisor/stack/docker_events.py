"""Docker's side of dependency health: the events thread and the blocking SDK helpers.

`DockerEventSource` runs one daemon thread that subscribes to the engine's container events for
one compose project (by its label) and hands each one to the loop with
`loop.call_soon_threadsafe`; it owns no state the loop reads. When the engine goes away it
reports `on_lost(reason)` once, reconnects with exponential backoff, reports `on_back()` and
resubscribes with `since=` the last event it saw, so a short gap loses nothing (Docker replays
its recent events; a restarted engine has none to replay, which the loop's reconcile covers).

`list_containers` and `restart_container` block: the loop calls them through `sdk_call` (a worker
thread with a deadline), with a client of its own (the events thread never shares its client).
Every client comes from `docker_client`, whose HTTP timeout bounds each call inside the worker
too, so no worker outlives its deadline by more than that.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import requests

from devsupervisor.backoff import BackoffPolicy, RestartBudget
from devsupervisor.errors import DockerUnavailable
from devsupervisor.logs.pipeline import get_logger

log = get_logger()

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# The actions supervision acts on. Filtering them at the engine keeps the healthcheck's
# exec_create/exec_start/exec_die triple (every interval, every container) off the stream;
# `health_status` matches `health_status: <status>` (the engine fuzzy-matches that name).
ACTIONS = ("create", "start", "restart", "kill", "die", "oom", "stop", "destroy", "health_status")
# Reconnecting to a lost engine: a quick first retry (a restarting engine is back within
# seconds), capped so a long outage costs one attempt every 10 s; never gives up.
RECONNECT_POLICY = BackoffPolicy(initial=0.5, max=10.0, restarts=None, within=float("inf"))
# HTTP timeout of every SDK client (per request; `restart` adds its grace period to it): an engine
# that accepts the connection but never answers fails the call instead of holding a worker.
SDK_TIMEOUT = 30.0
# How long stop() waits for the thread; closing the stream's socket ends it within milliseconds.
STOP_JOIN_TIMEOUT = 5.0


@dataclass(frozen=True)
class ContainerEvent:
    """One container event of the project, as Docker reported it."""

    action: str  # create, start, restart, kill, die, oom, stop, destroy, health_status
    container_id: str
    service: str
    time: float  # Docker's timeNano / 1e9 (wall clock, seconds)
    health: str | None = None  # healthy | unhealthy | starting, for health_status only
    exit_code: int | None = None  # die only
    signal: str | None = None  # kill only: the signal number Docker sent, e.g. "15", "9"
    name: str = ""  # the container's name, e.g. cornjacket-postgres-1


@dataclass(frozen=True)
class ContainerInfo:
    """One container of the project as `docker inspect` sees it now."""

    service: str
    id: str
    name: str
    state: str  # created | running | paused | restarting | removing | exited | dead
    health: str  # healthy | unhealthy | starting | none (no healthcheck)
    exit_code: int | None
    started_at: str | None  # Docker's RFC 3339 timestamp
    # Whether the container has a healthcheck at all: right after start Docker may not have
    # filled in the health state yet, and `health` then reads "none" for a checked container.
    has_healthcheck: bool = False


def parse_event(raw: dict[str, Any]) -> ContainerEvent | None:
    """A `ContainerEvent` from one decoded engine event; None for anything supervision ignores."""
    action_text = str(raw.get("Action") or raw.get("status") or "")
    action, _, detail = action_text.partition(":")
    if action not in ACTIONS:
        return None
    actor = raw.get("Actor") or {}
    attrs: dict[str, str] = actor.get("Attributes") or {}
    service = attrs.get(SERVICE_LABEL)
    # `compose run` containers carry the service label too but are not the service.
    if not service or attrs.get(ONEOFF_LABEL, "False") == "True":
        return None
    exit_code = attrs.get("exitCode")
    time_ns = raw.get("timeNano") or int(raw.get("time", 0)) * 1_000_000_000
    return ContainerEvent(
        action=action,
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        service=service,
        time=time_ns / 1e9,
        health=(detail.strip() or None) if action == "health_status" else None,
        exit_code=int(exit_code) if exit_code is not None and exit_code.isdigit() else None,
        signal=attrs.get("signal") if action == "kill" else None,
        name=attrs.get("name", ""),
    )


class DockerEventSource:
    """The docker events thread for one compose project. `start()`, later `stop()`."""

    def __init__(
        self,
        project: str,
        *,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ContainerEvent], None],
        on_lost: Callable[[str], None],
        on_back: Callable[[], None],
        on_subscribed: Callable[[], None] = lambda: None,
        client_factory: Callable[[], docker.DockerClient] | None = None,
        reconnect: BackoffPolicy = RECONNECT_POLICY,
    ) -> None:
        self.project = project
        self._loop = loop
        self._on_event = on_event
        self._on_lost = on_lost
        self._on_back = on_back
        self._on_subscribed = on_subscribed
        self._client_factory = client_factory or docker_client
        # Used by the thread only.
        self._reconnects = RestartBudget(reconnect)
        self._should_stop = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()  # guards _client/_stream between the thread and stop()
        self._client: docker.DockerClient | None = None
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        # Resume point: the newest event delivered (timeNano) and the events at exactly that
        # nanosecond, because the engine's `since` is inclusive and would replay them.
        self._last_ns: int | None = None
        self._at_last_ns: set[tuple[str, str]] = set()

    @property
    def is_subscribed(self) -> bool:
        """True while a subscription is live (events flow to the loop)."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Block (a thread, not the loop) until subscribed; False at the timeout."""
        return self._subscribed.wait(timeout)

    def start(self) -> None:
        """Start the thread; events then flow to `on_event` on the loop."""
        if self._thread is not None:
            raise RuntimeError("DockerEventSource already started")
        self._thread = threading.Thread(
            target=self._run, name=f"docker-events-{self.project}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = STOP_JOIN_TIMEOUT) -> None:
        """End the thread: close its stream and client (unblocks the read), then join."""
        self._should_stop.set()
        self._close_connection()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("docker.events_thread_stuck", project=self.project, timeout=timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        lost = False
        while not self._should_stop.is_set():
            try:
                stream = self._subscribe()
            except Exception as exc:  # whatever the SDK raises, the engine is not reachable
                self._close_connection()
                if not lost:
                    lost = True
                    self._post(self._on_lost, _reason(exc))
                self._should_stop.wait(self._reconnects.record_failure() or 0.0)
                continue
            self._subscribed.set()
            self._reconnects.reset()
            if lost:
                lost = False
                self._post(self._on_back)
            self._post(self._on_subscribed)
            reason = self._pump(stream)
            self._subscribed.clear()
            self._close_connection()
            if self._should_stop.is_set():
                break
            lost = True
            self._post(self._on_lost, reason)
        self._subscribed.clear()

    def _subscribe(self) -> Iterator[dict[str, Any]]:
        client = self._client_factory()
        with self._lock:
            self._client = client
        if self._should_stop.is_set():
            raise RuntimeError("stopping")
        client.ping()
        since = None if self._last_ns is None else _since_param(self._last_ns)
        # Taken before subscribing, so the first resume point cannot be later than the stream's
        # first event (the engine runs on this host: same clock).
        began_ns = time.time_ns()
        # `since` is "seconds.nanoseconds": the engine takes it, the stubs only know int/datetime.
        stream = client.events(  # type: ignore[call-overload]
            decode=True,
            since=since,
            filters={
                "type": "container",
                "label": f"{PROJECT_LABEL}={self.project}",
                "event": list(ACTIONS),
            },
        )
        with self._lock:
            self._stream = stream
        if self._should_stop.is_set():
            raise RuntimeError("stopping")
        if self._last_ns is None:
            # Nothing seen yet: a later resubscription resumes from the moment this one began.
            self._last_ns = began_ns
        return iter(stream)

    def _pump(self, stream: Iterator[dict[str, Any]]) -> str:
        """Deliver events until the stream ends; return why it ended."""
        try:
            for raw in stream:
                if self._should_stop.is_set():
                    return "stopping"
                self._deliver(raw)
        except Exception as exc:  # a broken connection surfaces as any of several SDK errors
            return _reason(exc)
        return "event stream ended"

    def _deliver(self, raw: dict[str, Any]) -> None:
        time_ns = int(raw.get("timeNano") or 0)
        key = (str((raw.get("Actor") or {}).get("ID", "")), str(raw.get("Action", "")))
        if self._last_ns is not None and time_ns:
            if time_ns < self._last_ns or (time_ns == self._last_ns and key in self._at_last_ns):
                return  # replayed by `since` after a reconnect: already delivered
            if time_ns > self._last_ns:
                self._at_last_ns.clear()
        if time_ns:
            self._last_ns = time_ns
            self._at_last_ns.add(key)
        event = parse_event(raw)
        if event is not None:
            self._post(self._on_event, event)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._should_stop.set()

    def _close_connection(self) -> None:
        with self._lock:
            stream, client = self._stream, self._client
            self._stream = self._client = None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # already closed or the socket is gone: either way it is shut
                log.debug("docker.events_close_failed", project=self.project)
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("docker.client_close_failed", project=self.project)


def _since_param(time_ns: int) -> str:
    # Seconds.nanoseconds, the engine's own timestamp format: exact, unlike a float.
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, requests.ConnectionError | docker.errors.DockerException):
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return f"{type(exc).__name__}: {exc}"[:300]


# -- blocking helpers (the loop calls these through sdk_call) ------------------------------------

_T = TypeVar("_T")


def docker_client() -> docker.DockerClient:
    """A client for the engine of the environment (DOCKER_HOST), every request bounded."""
    return docker.from_env(timeout=int(SDK_TIMEOUT))


async def sdk_call(what: str, fn: Callable[..., _T], *args: Any, timeout: float) -> _T:
    """Run a blocking SDK call in a worker thread, giving up after `timeout` seconds.

    Raises:
        DockerUnavailable: the engine refused the connection or did not answer in time.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
    except TimeoutError:
        message = f"Docker engine did not answer {what} within {timeout:g}s"
        raise DockerUnavailable(message) from None
    except docker.errors.APIError:
        raise  # the engine answered: a refusal about this request, not an unreachable engine
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DockerUnavailable(f"Docker engine not reachable: {_reason(exc)}") from exc


def list_containers(client: docker.DockerClient, project: str) -> list[ContainerInfo]:
    """Every non-one-off container of the project, inspected (state, health, exit code)."""
    found: list[ContainerInfo] = []
    listed = client.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
    for summary in listed:
        labels = summary.get("Labels") or {}
        service = labels.get(SERVICE_LABEL)
        if not service or labels.get(ONEOFF_LABEL, "False") == "True":
            continue
        try:
            detail = client.api.inspect_container(summary["Id"])
        except docker.errors.NotFound:
            continue  # removed between the listing and the inspect
        state = detail.get("State") or {}
        health = (state.get("Health") or {}).get("Status") or "none"
        test = ((detail.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
        has_healthcheck = bool(test) and test[0] != "NONE"
        status = str(state.get("Status") or "")
        found.append(
            ContainerInfo(
                service=service,
                id=str(detail["Id"]),
                name=str(detail.get("Name", "")).lstrip("/"),
                state=status,
                health=health,
                exit_code=None if status == "running" else state.get("ExitCode"),
                started_at=state.get("StartedAt"),
                has_healthcheck=has_healthcheck,
            )
        )
    return found


def restart_container(client: docker.DockerClient, container_id: str, timeout: float) -> None:
    """`docker restart` (stop with `timeout` seconds of grace, then start); starts an exited one.

    Raises:
        docker.errors.APIError: the engine refused (e.g. the container is gone).
    """
    client.api.restart(container_id, timeout=int(timeout))
