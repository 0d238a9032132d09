"""When to build: leading edge for a lone save, settle window for a stream of changes.

Rules:
- The first real change after a quiet period fires at once: no fixed delay in front of a save.
- A change while a build runs cancels that build (the owner does the cancelling when told
  `should_cancel`), and the next build fires once changes have settled: `debounce` seconds of
  quiet, but never later than `MAX_HOLD` after the first pending change, so an endless stream
  still builds.
- While paused, changes accumulate and nothing fires; `resume` fires what accumulated.
- Never a queue: at most one fire is outstanding; changes arriving while the owner is busy are
  merged into the next one.
All times come from the injected `clock`, and timers from the injected `call_later`, so tests can
drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

# An endless stream of changes (a code generator in a loop) still gets a build this often.
MAX_HOLD = 2.0

Fire = Callable[[list[Path], float], None]


class ReloadScheduler:
    def __init__(
        self,
        debounce: float,
        on_fire: Fire,
        *,
        clock: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle],
        max_hold: float = MAX_HOLD,
    ) -> None:
        self.debounce = debounce
        self.max_hold = max_hold
        self._on_fire = on_fire
        self._clock = clock
        self._call_later = call_later
        self._pending: dict[Path, None] = {}
        self._first_pending_at: float | None = None
        self._last_change_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.paused = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def note(self, paths: frozenset[Path]) -> bool:
        """Record changed paths. Returns True when a running build should be cancelled."""
        now = self._clock()
        quiet = self._last_change_at is None or now - self._last_change_at >= self.debounce
        self._last_change_at = now
        for path in sorted(paths):
            self._pending[path] = None
        if self._first_pending_at is None:
            self._first_pending_at = now
        if self.paused:
            return False
        if self._busy:
            self._arm()
            return True
        if quiet and self._timer is None:
            self._fire()
        else:
            self._arm()
        return False

    def set_busy(self, busy: bool) -> None:
        """The owner reports whether a build or swap is in flight; when it ends, pending fires
        after the settle window."""
        self._busy = busy
        if not busy and self._pending and not self.paused:
            self._arm()

    def pause(self) -> None:
        self.paused = True
        self._cancel_timer()

    def resume(self) -> None:
        self.paused = False
        if self._pending and not self._busy:
            self._fire()

    def take(self) -> list[Path]:
        """Empty the pending set (a manual rebuild covers everything that was pending)."""
        paths = list(self._pending)
        self._pending.clear()
        self._first_pending_at = None
        self._cancel_timer()
        return paths

    def _due(self) -> float:
        """When pending changes fire: quiet for `debounce`, or held for `max_hold`."""
        assert self._last_change_at is not None and self._first_pending_at is not None
        return min(self._last_change_at + self.debounce, self._first_pending_at + self.max_hold)

    def _arm(self) -> None:
        self._cancel_timer()
        self._timer = self._call_later(max(0.0, self._due() - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.paused or self._busy or not self._pending:
            return
        # A timer may run a hair early by float rounding; within a microsecond counts as due.
        if self._clock() + 1e-6 >= self._due():
            self._fire()
        else:
            self._arm()

    def _fire(self) -> None:
        first = self._first_pending_at if self._first_pending_at is not None else self._clock()
        paths = self.take()
        self._on_fire(paths, first)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
