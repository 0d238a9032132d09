"""State enums and their legal transitions. A leaf module: imports nothing from the package.

Each machine is an Enum plus a table of allowed edges; `transition()` rejects anything else so a
logic error shows up as an exception in tests instead of a status that lies.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


class IllegalTransition(RuntimeError):
    """A state change that the table does not allow: a bug in the caller, never user input."""


class PlatformState(StrEnum):
    BUILDING = "building"
    STARTING = "starting"
    RUNNING = "running"
    BUILD_FAILED = "build_failed"
    CRASHED = "crashed"
    CRASHLOOP = "crashloop"
    STOPPED = "stopped"


_P = PlatformState
PLATFORM_EDGES: dict[PlatformState, frozenset[PlatformState]] = {
    # Nothing running: a build (sources changed) or a start (build is fresh) begins.
    _P.STOPPED: frozenset({_P.BUILDING, _P.STARTING}),
    # A build ends in a swap (starting), a failure, or is dropped: back to what ran before it
    # (running, crashed, crashloop, stopped) when it was cancelled or its inputs moved on.
    _P.BUILDING: frozenset(
        {_P.STARTING, _P.BUILD_FAILED, _P.RUNNING, _P.CRASHED, _P.CRASHLOOP, _P.STOPPED}
    ),
    # A started process becomes ready, dies or times out (crashed), or is stopped on purpose.
    _P.STARTING: frozenset({_P.RUNNING, _P.CRASHED, _P.STOPPED, _P.BUILDING}),
    # A running platform rebuilds, is restarted, dies, or is stopped.
    _P.RUNNING: frozenset({_P.BUILDING, _P.STARTING, _P.CRASHED, _P.STOPPED}),
    # The old binary may still serve after a failed build: it can be rebuilt, restarted, die,
    # or be stopped.
    _P.BUILD_FAILED: frozenset({_P.BUILDING, _P.STARTING, _P.CRASHED, _P.STOPPED}),
    # After an unexpected exit: backoff restart, give up into crashloop, rebuild, or stop.
    _P.CRASHED: frozenset({_P.STARTING, _P.CRASHLOOP, _P.BUILDING, _P.STOPPED}),
    # Crashloop waits for a source change (building) or an explicit restart (starting).
    _P.CRASHLOOP: frozenset({_P.BUILDING, _P.STARTING, _P.STOPPED}),
}


def resting_state(before: PlatformState, *, alive: bool) -> PlatformState:
    """Where a dropped build (cancelled or superseded) returns to: what ran before it, judged
    by whether a platform process is still alive."""
    if before in (_P.BUILDING, _P.STARTING):
        return _P.RUNNING if alive else _P.STOPPED
    if before in (_P.RUNNING, _P.BUILD_FAILED):
        return before if alive else _P.STOPPED
    return before


class StackState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    SWITCHING = "switching"
    STOPPING = "stopping"
    DEGRADED = "degraded"


_S = StackState
STACK_EDGES: dict[StackState, frozenset[StackState]] = {
    # Start ends running or degraded (a service did not come up), or is interrupted by stop.
    _S.STARTING: frozenset({_S.RUNNING, _S.DEGRADED, _S.STOPPING, _S.SWITCHING}),
    # A running stack can be switched, stopped, or lose a service.
    _S.RUNNING: frozenset({_S.SWITCHING, _S.STOPPING, _S.DEGRADED, _S.STARTING}),
    # A switch ends running or degraded; stop may interrupt it.
    _S.SWITCHING: frozenset({_S.RUNNING, _S.DEGRADED, _S.STOPPING}),
    # Degraded recovers (running), is switched or restarted, or stopped.
    _S.DEGRADED: frozenset({_S.RUNNING, _S.SWITCHING, _S.STOPPING, _S.STARTING}),
    # Stopping is final for this daemon.
    _S.STOPPING: frozenset(),
}


class ServiceState(StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    EXITED = "exited"
    GAVE_UP = "gave_up"


def transition(edges: dict[E, frozenset[E]], current: E, target: E) -> E:
    """Return `target` if the edge current -> target is allowed (or a no-op), else raise.

    Raises:
        IllegalTransition: the table has no such edge.
    """
    if current == target or target in edges.get(current, frozenset()):
        return target
    raise IllegalTransition(f"{type(current).__name__}: {current.value} -> {target.value}")
