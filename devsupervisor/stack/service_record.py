"""What the health supervisor knows about one compose service, and its state machine's edges.

Docker's events are facts about things users (and Docker) do at any time, so the table is wide;
it still rejects moves no event can cause, e.g. leaving `gave_up` without a reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from devsupervisor.backoff import RestartBudget
from devsupervisor.states import ServiceState, transition

_S = ServiceState
SERVICE_EDGES: dict[ServiceState, frozenset[ServiceState]] = {
    # Starting (start period): healthy, restarted (unhealthy, died), stopped, exited, given up.
    _S.STARTING: frozenset({_S.RUNNING, _S.RESTARTING, _S.STOPPED, _S.EXITED, _S.GAVE_UP}),
    # Running: started again by someone (health starting), restarted, stopped, died, given up.
    _S.RUNNING: frozenset({_S.STARTING, _S.RESTARTING, _S.STOPPED, _S.EXITED, _S.GAVE_UP}),
    # Restarting: the container is up again (with or without a healthcheck); stopped or removed
    # meanwhile; the restart failed (exited) or the retry was over budget (gave up).
    _S.RESTARTING: frozenset({_S.STARTING, _S.RUNNING, _S.STOPPED, _S.EXITED, _S.GAVE_UP}),
    # Stopped on purpose: started by someone, restarted by `devsup restart`, or its mark reset.
    _S.STOPPED: frozenset({_S.STARTING, _S.RUNNING, _S.RESTARTING, _S.EXITED}),
    # Exited by itself: restarted (maybe after backoff), started by someone, stopped (a late
    # `stop` event), or over budget.
    _S.EXITED: frozenset({_S.RESTARTING, _S.STARTING, _S.RUNNING, _S.STOPPED, _S.GAVE_UP}),
    # Given up: only a reset leaves it, into what the container is (or a restart).
    _S.GAVE_UP: frozenset({_S.RESTARTING, _S.STARTING, _S.RUNNING, _S.EXITED}),
}


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


def short_id(container_id: str | None) -> str | None:
    """The 12-character id `docker ps` shows."""
    return container_id[:12] if container_id else None


@dataclass(eq=False)
class ServiceRecord:
    """One service of the chosen stack. Mutated by `ServiceSupervisor` on the loop only."""

    name: str
    since: float  # wall clock of the last state change
    budget: RestartBudget  # backoff and give-up for restarts devsup makes
    state: ServiceState = ServiceState.STARTING
    reason: str | None = None
    health: str = "none"  # healthy | unhealthy | starting | none
    container: str | None = None  # full id of the service's current container
    restarts: int = 0  # restarts devsup made (status `restarts`)
    running: bool = False  # the container is up, per the last event or listing
    has_healthcheck: bool = False  # learned from a health_status event or a listing
    on_purpose: bool = False  # stopped on purpose: stays stopped until started
    stopped_at: float | None = None  # clock time the stop on purpose was noticed
    killed_at: float | None = None  # clock time of the last `kill` devsup did not send
    kill_signal: str | None = None
    oom: bool = False  # an `oom` event came; the `die` that follows is its doing
    ours: bool = False  # devsup's restart in flight: its kill/die/stop are expected
    pending: TimerHandle | None = None  # a restart waiting out its backoff delay

    def move(self, target: ServiceState, reason: str | None, now: float) -> None:
        """Change state through the edge table; `since` moves only when the state does.

        Raises:
            IllegalTransition: no such edge (a bug in the supervisor).
        """
        new = transition(SERVICE_EDGES, self.state, target)
        if new is not self.state:
            self.since = now
        self.state = new
        self.reason = reason

    def cancel_pending(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None

    def clear_marks(self) -> None:
        """Forget stop marks, the give-up window and any in-flight or waiting restart."""
        self.cancel_pending()
        self.budget.reset()
        self.on_purpose = self.ours = self.oom = False
        self.killed_at = self.stopped_at = None
