"""When a crashed platform is started again: after a backoff, until too many exits within a
window make it a crash loop (then only a change or an explicit restart starts it). The timer
only posts an intent; the owner does the restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from devsupervisor.backoff import PLATFORM_POLICY, RestartBudget


class CrashPolicy:
    def __init__(
        self,
        *,
        clock: Callable[[], float],
        call_later: Callable[..., asyncio.TimerHandle | Any],
        on_due: Callable[[int], None],
    ) -> None:
        self._budget = RestartBudget(PLATFORM_POLICY, clock=clock)
        self._call_later = call_later
        self._on_due = on_due
        self._timer: asyncio.TimerHandle | None = None

    @property
    def exits(self) -> int:
        """Exits counted within the window."""
        return self._budget.count

    def crashed(self, start: int) -> float | None:
        """Count an exit of start number `start`. Returns the delay after which `on_due(start)`
        is called, or None: a crash loop, nothing scheduled."""
        delay = self._budget.record_failure()
        if delay is not None:
            self._timer = self._call_later(delay, lambda: self._on_due(start))
        return delay

    def cancel(self) -> None:
        """Drop a scheduled restart (something else starts the platform first)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reset(self) -> None:
        """Forget past exits (an explicit restart, a new target)."""
        self.cancel()
        self._budget.reset()
