"""One restart budget for everything devsup restarts: exponential backoff, and a limit of N
restarts within a sliding window after which it gives up (platform `crashloop`, service
`gave_up`) until reset. A leaf module: it imports nothing from the package.

The caller records each failure; the budget answers how long to wait before the next attempt,
or None when the failure is one too many. Time comes from an injected clock, so fast tests drive
it without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# An unlimited budget (a reconnect loop) keeps this many failure times: the delay has long since
# reached `max` by then (initial * 2**63), so older ones cannot change an answer.
UNLIMITED_MEMORY = 64


@dataclass(frozen=True)
class BackoffPolicy:
    """How a budget spaces restarts and when it gives up.

    Attributes:
        initial: delay before the first delayed restart; each further one within the window
            doubles it.
        max: cap on the delay.
        restarts: restarts allowed within `within` seconds; the failure after them exhausts the
            budget. None: never exhausted (a reconnect loop).
        within: the sliding window, in seconds.
        immediate_first: the first restart in a window goes at once (a service's crash is
            restarted without delay; the platform waits `initial` even for the first).
    """

    initial: float
    max: float
    restarts: int | None
    within: float
    immediate_first: bool = False


# The platform: five exits within a minute is a crash loop (four restarts, then the fifth exit
# gives up): restarting again only burns CPU and floods the log. A quick first retry, capped so
# a flapping binary comes back within seconds once fixed.
PLATFORM_POLICY = BackoffPolicy(initial=0.5, max=10.0, restarts=4, within=60.0)


class RestartBudget:
    """Failure times within the policy's window, and the delay they call for. Not thread-safe:
    one owner (the loop, or one thread) uses it. `policy` may be replaced (a config reload); the
    failures recorded so far count under the new one."""

    def __init__(
        self, policy: BackoffPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._failures: deque[float] = deque()

    @property
    def count(self) -> int:
        """Failures recorded within the window before now (the last one included)."""
        self._forget_old(self._clock())
        return len(self._failures)

    def record_failure(self) -> float | None:
        """Record a failure now.

        Returns:
            Seconds to wait before the next attempt, or None when the budget is exhausted
            (more than `restarts` failures within `within`): give up until `reset()`.
        """
        now = self._clock()
        self._forget_old(now)
        self._failures.append(now)
        policy = self.policy
        # Only the newest `restarts + 1` can decide an answer; older ones would only cost memory.
        memory = UNLIMITED_MEMORY if policy.restarts is None else policy.restarts + 1
        while len(self._failures) > memory:
            self._failures.popleft()
        n = len(self._failures)
        if policy.restarts is not None and n > policy.restarts:
            return None
        doublings = n - 2 if policy.immediate_first else n - 1
        if doublings < 0:
            return 0.0
        return float(min(policy.initial * 2**doublings, policy.max))

    def reset(self) -> None:
        """Forget every failure (a success that counts as recovery, a manual restart, a fix)."""
        self._failures.clear()

    def _forget_old(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self.policy.within:
            self._failures.popleft()
