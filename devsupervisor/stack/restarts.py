"""Issuing the restarts the health policy asks for: at once, after the backoff delay, or not at
all (the service gave up).

`ServiceSupervisor` (health.py) decides whether a service needs a restart; `RestartIssuer`
decides when, from the service's `RestartBudget`, and does it through the injected restart
coroutine. It owns the backoff timers and the restart tasks. Loop-only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

from devsupervisor.backoff import BackoffPolicy
from devsupervisor.config.model import DependenciesConfig
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack.service_record import ServiceRecord, TimerHandle
from devsupervisor.states import ServiceState

log = get_logger()

CallLater = Callable[[float, Callable[[], None]], TimerHandle]
RestartFn = Callable[[str, str], Awaitable[None]]

_S = ServiceState


def policy_of(deps: DependenciesConfig) -> BackoffPolicy:
    """A crash is restarted at once; later ones within the window back off, then give up."""
    return BackoffPolicy(
        initial=deps.backoff.initial,
        max=deps.backoff.max,
        restarts=deps.give_up_after.restarts,
        within=deps.give_up_after.within,
        immediate_first=True,
    )


class RestartIssuer:
    """Restarts service records on the policy's schedule, one restart in flight per service."""

    def __init__(
        self,
        *,
        restart: RestartFn,
        on_restarted: Callable[[str], None],
        wall_clock: Callable[[], float],
        call_later: CallLater | None,
        is_current: Callable[[ServiceRecord], bool],
        config: Callable[[], DependenciesConfig],
    ) -> None:
        """Args:
        is_current: whether a record is still supervised (a switch may have dropped it while
            its restart waited or ran).
        config: the dependencies config now (it follows live reloads), for give-up messages.
        """
        self._restart = restart
        self._on_restarted = on_restarted
        self._wall = wall_clock
        self._call_later = call_later
        self._is_current = is_current
        self._config = config
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, svc: ServiceRecord, reason: str) -> None:
        """Restart now, after the backoff delay, or give up."""
        if svc.pending is not None or svc.ours:
            return
        delay = svc.budget.record_failure()
        if delay is None:
            give_up = self._config().give_up_after
            log.error(
                "service.gave_up",
                service=svc.name,
                restarts=give_up.restarts,
                window=give_up.within,
                reason=reason,
            )
            svc.move(
                _S.GAVE_UP,
                f"gave up after {give_up.restarts} restarts within {give_up.within:g}s ({reason})",
                self._wall(),
            )
            return
        svc.move(_S.RESTARTING, reason, self._wall())
        if delay == 0.0:
            self._issue(svc, reason, delay)
        else:
            call_later = self._call_later or asyncio.get_running_loop().call_later
            svc.pending = call_later(delay, partial(self._issue_pending, svc, reason, delay))

    async def now(self, svc: ServiceRecord, reason: str) -> None:
        """Restart at once and wait for it (`devsup restart NAME`); the caller marked it ours.

        Raises:
            Exception: whatever the restart coroutine raises.
        """
        svc.budget.record_failure()  # a manual restart opens the window, like the first crash
        svc.restarts += 1
        try:
            await self._restart(svc.name, reason)
        except Exception:
            svc.ours = False
            raise
        log.info("service.restarted", service=svc.name, reason=reason, attempt=1, delay=0.0)
        self._on_restarted(svc.name)

    def _issue_pending(self, svc: ServiceRecord, reason: str, delay: float) -> None:
        svc.pending = None
        if self._is_current(svc) and svc.state is _S.RESTARTING:
            self._issue(svc, reason, delay)

    def _issue(self, svc: ServiceRecord, reason: str, delay: float) -> None:
        svc.ours = True
        svc.restarts += 1
        attempt = svc.budget.count
        task = asyncio.get_running_loop().create_task(self._run(svc, reason, attempt, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, svc: ServiceRecord, reason: str, attempt: int, delay: float) -> None:
        try:
            await self._restart(svc.name, reason)
        except Exception as exc:  # the restart seam's failure is data here, not a crash
            log.warning(
                "service.restart_failed",
                service=svc.name,
                reason=reason,
                attempt=attempt,
                error=str(exc),
            )
            if self._is_current(svc) and svc.ours:
                svc.ours = False
                svc.move(_S.EXITED, f"restart failed: {exc}", self._wall())
                self.request(svc, reason)
            return
        log.info("service.restarted", service=svc.name, reason=reason, attempt=attempt, delay=delay)
        self._on_restarted(svc.name)
