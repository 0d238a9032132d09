"""What can be asked of the platform lifecycle. Each intent is a value posted to the owner's
queue (`platform/owner.py`); callers that wait get an `Outcome` future resolved by the operation
that served their intent (which may be a later one: a superseded rebuild reports the build that
replaced it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from devsupervisor.platform.target import PlatformTarget

# True when the platform serves afterwards (built, started and ready), False otherwise.
Outcome = asyncio.Future[bool]


@dataclass(frozen=True)
class SourcesChanged:
    """Verified content changes from the watcher."""

    paths: frozenset[Path]


@dataclass(frozen=True)
class BuildDue:
    """The scheduler's settle window ended: build what is pending."""

    paths: tuple[Path, ...]
    first_at: float


@dataclass(frozen=True)
class Rebuild:
    """`devsup rebuild`: build and swap now, whatever changed."""

    outcome: Outcome | None
    trigger: tuple[str, ...] = ("manual",)


@dataclass(frozen=True)
class Restart:
    """`devsup restart platform` (or a dependency it restarts with): stop and start the current
    artefact; clears the crash history."""

    outcome: Outcome | None


@dataclass(frozen=True)
class Exited:
    """A platform process ended without being asked to. `start` numbers the start it came
    from, so the exit of a process already replaced is recognised as stale."""

    target: PlatformTarget
    start: int
    code: int | None


@dataclass(frozen=True)
class CrashRestartDue:
    """The backoff after a crash elapsed."""

    start: int


@dataclass(frozen=True)
class Enter:
    """Run `target` from now on (daemon start, stack switch, config change): build first when
    `build_first` (or nothing to run), then swap it in. The process running now keeps serving
    until the new one is about to start."""

    target: PlatformTarget
    build_first: bool
    outcome: Outcome | None


@dataclass(frozen=True)
class SetPaused:
    paused: bool


@dataclass(frozen=True)
class Stop:
    """Stop the platform. `final` closes the owner: later intents are answered False."""

    outcome: Outcome | None
    final: bool = False


@dataclass
class Waiters:
    """Futures waiting on one build-and-swap; carried to the next one when it is superseded."""

    futures: list[Outcome] = field(default_factory=list)

    @classmethod
    def of(cls, outcome: Outcome | None) -> Waiters:
        waiters = cls()
        waiters.add(outcome)
        return waiters

    def add(self, outcome: Outcome | None) -> None:
        if outcome is not None:
            self.futures.append(outcome)

    def take(self, other: Waiters) -> None:
        self.futures.extend(other.futures)
        other.futures.clear()

    def resolve(self, ok: bool) -> None:
        for future in self.futures:
            resolve(future, ok)
        self.futures.clear()


Intent = (
    SourcesChanged
    | BuildDue
    | Rebuild
    | Restart
    | Exited
    | CrashRestartDue
    | Enter
    | SetPaused
    | Stop
)


def resolve(outcome: Outcome | None, ok: bool) -> None:
    """Answer a caller (once; a later answer to the same future is ignored)."""
    if outcome is not None and not outcome.done():
        outcome.set_result(ok)


def answer(intent: Intent, ok: bool) -> None:
    """Answer whoever waits on `intent`, if anyone does."""
    resolve(getattr(intent, "outcome", None), ok)
