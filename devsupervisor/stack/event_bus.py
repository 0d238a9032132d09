"""The project's container events, fanned out on the loop to whoever waits for one.

One Docker event stream (`docker_events.DockerEventSource`, one thread) feeds the whole daemon:
`DockerWatch` publishes each event here on the loop, and waiters (the stack's bring-up, the
platform container's readiness) subscribe instead of opening streams of their own. A waiter
subscribes *before* it reads the current state (a listing, an inspect), so an event that lands
between the two is queued, never lost.

`live` tells whether the stream is subscribed right now: while it is not, events may be missing,
so waiting on them would wait for nothing; `wait_live` lets a waiter wait for the stream first,
and `lost` fails every waiting subscription with the reason at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from devsupervisor.errors import DockerUnavailable
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack.docker_events import ContainerEvent

log = get_logger()

EventFilter = Callable[[ContainerEvent], bool]
# Events one subscription holds before it drops the oldest: a waiter reads them as they come;
# this only bounds a waiter that stopped reading without closing.
SUBSCRIPTION_CAP = 1000


class Subscription:
    """Matching events from the moment of `ContainerEvents.subscribe`, until `close()`."""

    def __init__(self, bus: ContainerEvents, accepts: EventFilter) -> None:
        self._bus = bus
        self.accepts = accepts
        self._queue: deque[ContainerEvent] = deque(maxlen=SUBSCRIPTION_CAP)
        self._wakeup = asyncio.Event()
        self._lost: str | None = None

    def _put(self, event: ContainerEvent) -> None:
        self._queue.append(event)
        self._wakeup.set()

    def _fail(self, reason: str) -> None:
        self._lost = reason
        self._wakeup.set()

    async def next(self, timeout: float) -> ContainerEvent:
        """The next matching event.

        Raises:
            TimeoutError: none within `timeout` seconds.
            DockerUnavailable: the event stream was lost while subscribed (events may be missing).
        """
        deadline = time.monotonic() + timeout
        while not self._queue:
            if self._lost is not None:
                raise DockerUnavailable(f"Docker engine not reachable: {self._lost}")
            self._wakeup.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(self._wakeup.wait(), remaining)
        return self._queue.popleft()

    def drain(self) -> list[ContainerEvent]:
        """The events queued now, without waiting."""
        events = list(self._queue)
        self._queue.clear()
        return events

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContainerEvents:
    """On-loop fan-out of one project's container events. Loop-only."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._live = asyncio.Event()
        self.error: str | None = None  # why the stream is down; None before the first answer

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def subscribe(self, accepts: EventFilter = lambda event: True) -> Subscription:
        """Queue every event `accepts` takes from now on; use as a context manager."""
        sub = Subscription(self, accepts)
        self._subscriptions.add(sub)
        return sub

    async def wait_for(self, accepts: EventFilter, timeout: float) -> ContainerEvent:
        """The first event `accepts` takes from now on (see `Subscription.next` for errors)."""
        with self.subscribe(accepts) as sub:
            return await sub.next(timeout)

    async def wait_live(self, timeout: float) -> None:
        """Return once the stream is subscribed.

        Raises:
            DockerUnavailable: the engine is known to be unreachable, or the stream did not come
                up within `timeout` seconds.
        """
        if self.live:
            return
        if self.error is not None:
            raise DockerUnavailable(self.error)
        try:
            await asyncio.wait_for(self._live.wait(), timeout)
        except TimeoutError:
            raise DockerUnavailable(
                f"Docker event stream not subscribed after {timeout:g}s"
            ) from None

    # -- fed by DockerWatch (on the loop) ---------------------------------------------------

    def publish(self, event: ContainerEvent) -> None:
        for sub in list(self._subscriptions):
            if sub.accepts(event):
                sub._put(event)

    def subscribed(self) -> None:
        self.error = None
        self._live.set()

    def lost(self, error: str) -> None:
        self.error = error
        self._live.clear()
        for sub in list(self._subscriptions):
            sub._fail(error)
