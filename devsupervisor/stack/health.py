"""Dependency health: the loop-side policy that keeps the chosen stack's compose services up.

Docker's events (from `docker_events.DockerEventSource`) are facts; `ServiceSupervisor` decides.
It runs on the loop only and reaches Docker solely through the injected `restart` coroutine,
which `restarts.RestartIssuer` calls on the schedule of each service's restart budget.

What the events mean (observed on the engine, in this order):
- `docker stop`, `docker compose stop`, `compose down`, devsup's own stops:
  `kill` (SIGTERM; SIGKILL after the grace period) -> `die` -> `stop`.
- `docker kill`: `kill` (SIGKILL) -> `die`. The user asked for it: also a stop on purpose.
- a crash, the kernel's OOM killer, `kill -9` of the process from the host: (`oom` ->) `die`,
  with no `kill` before it. Only these are restarted.
- devsup's own restart: `kill` -> `die` -> `stop` -> `start` -> `restart`; the supervisor marks
  the service as restarting by itself first, so those are expected, not a manual stop.
- a container in its healthcheck start period is `starting` (Docker sends no event for that);
  only `health_status: unhealthy` counts, so a slow starter is never restarted for being slow.

Rules: `die` within `KILL_WINDOW` of a `kill` not sent by devsup, or a `stop`, is a stop on
purpose: the service shows `stopped` and stays stopped (an `unhealthy` arriving after that `kill`
is ignored) until a `start` (`docker start`, `compose start`/`up`) clears the mark. A `die` with no
`kill` and a non-zero exit code (or an `oom`) is restarted; exit code 0 is a job that finished
(Docker's `on-failure` policy agrees) and shows `exited`. `health_status: unhealthy` is restarted
when `dependencies.restart_unhealthy`. The first restart is issued at once; each further one within
`give_up_after.within` waits `backoff.initial` doubled per restart, capped at `backoff.max`. A
restart that would exceed `give_up_after.restarts` within the window puts the service in `gave_up`
instead; it stays there (health still shown) until `reset(name)` (`devsup restart NAME`, a switch).

Reconcile (at start and after `docker.back`) records each service from a listing, restarts one
running but unhealthy, and returns the services that are down and not stopped on purpose for the
caller to bring up (`compose up`). A daemon restarted by itself does not remember manual stops:
at start every exited service of the chosen stack is down, and `compose up` starts it anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from devsupervisor.backoff import RestartBudget
from devsupervisor.config.model import DependenciesConfig
from devsupervisor.logs.pipeline import get_logger, utc_iso
from devsupervisor.stack.docker_events import ContainerEvent, ContainerInfo
from devsupervisor.stack.restarts import CallLater, RestartFn, RestartIssuer, policy_of
from devsupervisor.stack.service_record import ServiceRecord, short_id
from devsupervisor.states import ServiceState

log = get_logger()

# A `die` this soon after a `kill` is that kill's doing. The SIGTERM of a stop may take the whole
# grace period (compose's default is 10 s); past it Docker sends SIGKILL, a fresh `kill` event.
KILL_WINDOW = 120.0
# When the engine goes away, stop marks this recent may be the engine stopping its containers on
# the way down, not the user: they are dropped, so the reconcile after `docker.back` brings those
# services up again (the engine gives each container 10 s to stop).
ENGINE_STOP_GRACE = 15.0
# Container states in which the container counts as up.
UP_STATES = frozenset({"running", "restarting", "paused"})


_S = ServiceState


class ServiceSupervisor:
    """Restart policy for the chosen stack's compose services. Loop-only; feed it `handle()`."""

    def __init__(
        self,
        deps: DependenciesConfig,
        *,
        restart: RestartFn,
        on_restarted: Callable[[str], None] = lambda name: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        call_later: CallLater | None = None,
    ) -> None:
        """Set up the policy; nothing is supervised until `set_services`.

        Args:
            restart: `(service, reason)` -> restarts its container (`docker restart`, which also
                starts an exited one); raises when that failed.
            on_restarted: called with the service name after each restart devsup made
                (the daemon restarts the platform for the names in `platform.restart_on`).
            call_later: `(delay, callback)` -> handle with `cancel()`; the running loop's by
                default.
        """
        self._deps = deps
        self._policy = policy_of(deps)
        self._clock = clock
        self._wall = wall_clock
        self._services: dict[str, ServiceRecord] = {}
        self._docker_available = True
        self._restarts = RestartIssuer(
            restart=restart,
            on_restarted=on_restarted,
            wall_clock=wall_clock,
            call_later=call_later,
            is_current=lambda svc: self._services.get(svc.name) is svc,
            config=lambda: self._deps,
        )

    # -- what the daemon calls ----------------------------------------------------------------

    @property
    def deps(self) -> DependenciesConfig:
        return self._deps

    @deps.setter
    def deps(self, deps: DependenciesConfig) -> None:
        """A config reload: restarts already counted stay counted under the new budget."""
        self._deps = deps
        self._policy = policy_of(deps)
        for svc in self._services.values():
            svc.budget.policy = self._policy

    def set_services(self, names: Iterable[str]) -> None:
        """The chosen stack's services (start, switch). Kept ones are `reset`; others dropped."""
        wanted = list(dict.fromkeys(names))
        for name in list(self._services):
            if name not in wanted:
                self._services.pop(name).cancel_pending()
        for name in wanted:
            if name in self._services:
                self.reset(name)
            else:
                budget = RestartBudget(self._policy, clock=self._clock)
                self._services[name] = ServiceRecord(name, since=self._wall(), budget=budget)

    def reset(self, name: str) -> None:
        """Forget restarts, give-up and stop marks (`devsup restart NAME`, a switch).

        Raises:
            KeyError: `name` is not a service of the chosen stack.
        """
        svc = self._services[name]
        svc.clear_marks()
        if svc.state is _S.GAVE_UP:
            self._settle(svc, "reset")
        elif svc.state is _S.STOPPED:
            svc.move(_S.EXITED, "reset", self._wall())

    def mark_restarting(self, name: str, reason: str = "requested") -> None:
        """Devsup is about to restart or recreate `name` itself: its kill/die/stop are expected."""
        svc = self._services[name]
        svc.cancel_pending()
        svc.ours = True
        svc.move(_S.RESTARTING, reason, self._wall())

    async def restart_now(self, name: str, reason: str = "requested") -> None:
        """`devsup restart NAME`: reset, then restart at once through `restart`.

        Raises:
            KeyError: not a service of the chosen stack; whatever `restart` raises.
        """
        svc = self._services[name]
        svc.clear_marks()
        self.mark_restarting(name, reason)
        await self._restarts.now(svc, reason)

    def docker_lost(self) -> None:
        """The engine went away: nothing can be restarted until `reconcile` after it is back."""
        self._docker_available = False
        now = self._clock()
        for svc in self._services.values():
            svc.cancel_pending()
            svc.ours = False
            if svc.stopped_at is not None and now - svc.stopped_at <= ENGINE_STOP_GRACE:
                svc.on_purpose = False
            # Whatever the last event said, nobody knows now; "stopped on purpose" would lie
            # when it was the engine's own shutdown that stopped the container.
            if svc.state is not _S.GAVE_UP and not svc.on_purpose:
                svc.move(_S.EXITED, "docker engine unavailable", self._wall())

    def reconcile(self, containers: Iterable[ContainerInfo]) -> list[str]:
        """Record every service from a listing; restart running-but-unhealthy ones.

        Returns the services that are down (exited or without a container) and neither stopped
        on purpose nor given up: the caller brings them up (`compose up -d NAMES`).
        """
        self._docker_available = True
        by_service: dict[str, ContainerInfo] = {}
        for listed in containers:
            best = by_service.get(listed.service)
            if best is None or _preferred(listed, best):
                by_service[listed.service] = listed
        down: list[str] = []
        for name, svc in self._services.items():
            info = by_service.get(name)
            if info is not None and info.state in UP_STATES:
                self._adopt_running(svc, info)
                continue
            svc.container = info.id if info is not None else None
            svc.running = False
            svc.health = "none"
            if svc.state is _S.GAVE_UP:
                continue
            if svc.on_purpose:
                svc.move(_S.STOPPED, svc.reason, self._wall())
                continue
            why = "no container" if info is None else f"exited with code {info.exit_code}"
            svc.move(_S.EXITED, why, self._wall())
            down.append(name)
        return down

    def container_of(self, name: str) -> str | None:
        """Full id of the service's current container, as the events and listings last said."""
        svc = self._services.get(name)
        return svc.container if svc is not None else None

    def status(self) -> list[dict[str, Any]]:
        """The `services` entries of the status object (`status_types.ServiceStatus`), in stack
        order."""
        return [
            {
                "name": svc.name,
                "state": svc.state.value,
                "health": svc.health,
                "restarts": svc.restarts,
                "container": short_id(svc.container),
                "since": utc_iso(svc.since),
                "reason": svc.reason,
            }
            for svc in self._services.values()
        ]

    # -- events -------------------------------------------------------------------------------

    def handle(self, event: ContainerEvent) -> None:
        """Act on one Docker event (the events thread delivers it with call_soon_threadsafe)."""
        svc = self._services.get(event.service)
        if svc is None:
            return  # not in the chosen stack
        if event.action in ("create", "start", "restart") or svc.container is None:
            svc.container = event.container_id
        elif event.container_id != svc.container:
            return  # a replaced container of this service (compose recreate) winding down
        handler = getattr(self, f"_on_{event.action}", None)
        if handler is not None:
            handler(svc, event)

    def _on_start(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        was_ours = svc.ours
        svc.cancel_pending()
        svc.ours = svc.on_purpose = False
        svc.killed_at = svc.stopped_at = None
        svc.oom = False
        svc.running = True
        svc.health = "starting" if svc.has_healthcheck else "none"
        if svc.state is _S.GAVE_UP:
            return  # sticky until reset: a restart policy or a user start does not clear it
        reason = f"restarted: {svc.reason}" if was_ours and svc.reason else "started"
        target = _S.STARTING if svc.has_healthcheck else _S.RUNNING
        svc.move(target, reason, self._wall())

    def _on_restart(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        # Docker sends `start` then `restart` for one restart: the second is news only when the
        # `start` was missed.
        if svc.running and svc.state in (_S.STARTING, _S.RUNNING, _S.GAVE_UP):
            svc.ours = False
            return
        self._on_start(svc, event)

    def _on_kill(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        if not svc.ours:
            svc.killed_at = self._clock()
            svc.kill_signal = event.signal

    def _on_oom(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        svc.oom = True

    def _on_die(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        svc.running = False
        svc.health = "none"
        if svc.ours:
            return  # our own restart's stop half
        if self._killed_recently(svc):
            self._stopped(svc, exit_code=event.exit_code)
            return
        oom, svc.oom = svc.oom, False
        log.warning(
            "service.exited",
            service=svc.name,
            container=short_id(svc.container),
            exit_code=event.exit_code,
            oom=oom,
        )
        if svc.state is _S.GAVE_UP:
            return
        reason = "killed: out of memory" if oom else f"exited with code {event.exit_code}"
        svc.move(_S.EXITED, reason, self._wall())
        if oom or event.exit_code != 0:
            self._request_restart(svc, reason)

    def _on_stop(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        svc.running = False
        if not svc.ours and not svc.on_purpose:
            # A stop whose `kill` fell outside KILL_WINDOW (a very long grace period).
            self._stopped(svc, exit_code=None)

    def _on_destroy(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        svc.container = None
        svc.running = False
        svc.health = "none"
        if not svc.ours:
            svc.cancel_pending()
            if svc.state is _S.RESTARTING:
                svc.move(_S.EXITED, "container removed", self._wall())

    def _on_health_status(self, svc: ServiceRecord, event: ContainerEvent) -> None:
        svc.has_healthcheck = True
        health = event.health or "none"
        svc.health = health
        if svc.state is _S.GAVE_UP:
            return
        if health == "healthy":
            if svc.state in (_S.STARTING, _S.RUNNING):
                log.info("service.healthy", service=svc.name, container=short_id(svc.container))
                svc.move(_S.RUNNING, svc.reason, self._wall())
        elif health == "starting":
            if svc.state is _S.RUNNING:
                svc.move(_S.STARTING, svc.reason, self._wall())
        elif health == "unhealthy":
            if svc.ours or svc.pending is not None or svc.on_purpose or self._killed_recently(svc):
                return  # being restarted or stopped already: its health is beside the point
            log.warning(
                "service.unhealthy",
                service=svc.name,
                container=short_id(svc.container),
                reason="health_status: unhealthy",
            )
            if self.deps.restart_unhealthy:
                self._request_restart(svc, "unhealthy")

    # -- policy -------------------------------------------------------------------------------

    def _killed_recently(self, svc: ServiceRecord) -> bool:
        return svc.killed_at is not None and self._clock() - svc.killed_at <= KILL_WINDOW

    def _stopped(self, svc: ServiceRecord, *, exit_code: int | None) -> None:
        svc.on_purpose = True
        svc.stopped_at = self._clock()
        svc.cancel_pending()
        log.info(
            "service.stopped",
            service=svc.name,
            container=short_id(svc.container),
            exit_code=exit_code,
            signal=svc.kill_signal,
        )
        if svc.state is not _S.GAVE_UP:
            svc.move(_S.STOPPED, "stopped on purpose", self._wall())

    def _adopt_running(self, svc: ServiceRecord, info: ContainerInfo) -> None:
        svc.container = info.id
        svc.running = True
        svc.on_purpose = False
        svc.killed_at = svc.stopped_at = None
        svc.has_healthcheck = svc.has_healthcheck or info.health != "none"
        svc.health = info.health
        if svc.state is _S.GAVE_UP:
            return
        if info.state == "restarting":
            svc.move(_S.RESTARTING, "restarting (restart policy)", self._wall())
        elif info.health == "unhealthy" and self.deps.restart_unhealthy:
            log.warning(
                "service.unhealthy",
                service=svc.name,
                container=short_id(info.id),
                reason="unhealthy at reconcile",
            )
            self._request_restart(svc, "unhealthy")
        else:
            target = _S.STARTING if info.health == "starting" else _S.RUNNING
            svc.move(target, svc.reason, self._wall())

    def _settle(self, svc: ServiceRecord, reason: str) -> None:
        """Leave `gave_up`: take the state the container is in, and act on it as if new."""
        if not svc.running:
            svc.move(_S.EXITED, reason, self._wall())
        elif svc.health == "unhealthy" and self.deps.restart_unhealthy:
            svc.move(_S.RUNNING, reason, self._wall())
            self._request_restart(svc, "unhealthy")
        else:
            target = _S.STARTING if svc.health == "starting" else _S.RUNNING
            svc.move(target, reason, self._wall())

    def _request_restart(self, svc: ServiceRecord, reason: str) -> None:
        """Restart (now, after backoff, or give up); nothing while the engine is away."""
        if self._docker_available:
            self._restarts.request(svc, reason)


def _preferred(candidate: ContainerInfo, current: ContainerInfo) -> bool:
    """Of two containers of one service, the one that is up, else the one started last."""
    if (candidate.state in UP_STATES) != (current.state in UP_STATES):
        return candidate.state in UP_STATES
    return (candidate.started_at or "") > (current.started_at or "")
