"""Fan-out of events and log lines to any number of followers (`devsup logs -f`, `events -f`).

`publish()` is synchronous and never waits: it is called from the event loop by whatever produces
lines, and a follower that stops reading (a stalled terminal, a suspended `less`) must not stall
the daemon. Each subscriber has a bounded queue; when it is full, new items are counted instead of
queued, and the subscriber receives one marker item saying how many it missed once it catches up.
A ring buffer of recent items serves `logs -n N` and the backlog a new follower starts with.
Ring and queues are bounded in items and, given a `sizeof`, in bytes: a burst of huge lines
evicts old ones instead of growing the daemon.

Loop-only: no locks, because only the event loop touches these objects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from devsupervisor.logs.pipeline import utc_iso

T = TypeVar("T")

# Enough for a screenful of `logs -n` and a follower's catch-up after a build's burst of output.
DEFAULT_HISTORY = 1000
# The ring's byte bound: 1,000 ordinary records are ~200 KiB; 1,000 capped 64 KiB records would
# be 64 MB. 2 MiB keeps the ordinary case whole and the pathological one small.
DEFAULT_HISTORY_BYTES = 2 * 1024 * 1024
# Per follower: a burst of a few hundred lines passes while the client's socket is busy.
DEFAULT_QUEUE = 1000
# Per follower, in bytes: a stalled follower costs at most this much.
DEFAULT_QUEUE_BYTES = 2 * 1024 * 1024

Sizer = Callable[[Any], int]


def _unsized(item: object) -> int:
    return 0


def drop_marker(count: int) -> dict[str, Any]:
    """The marker for dict streams: an event record in the shape of the contract's events."""
    return {
        "ts": utc_iso(),
        "event": "stream.dropped",
        "level": "warning",
        "dropped": count,
    }


class Subscription(Generic[T]):
    """One follower's view: an async iterator over the items published after it subscribed.

    Use as an async context manager, or call `close()`, to unsubscribe; iteration then ends.
    """

    def __init__(
        self,
        owner: Broadcaster[T],
        maxsize: int,
        marker: Callable[[int], T],
        backlog: list[T],
        *,
        max_bytes: int = DEFAULT_QUEUE_BYTES,
        sizeof: Sizer = _unsized,
    ) -> None:
        self._owner = owner
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._sizeof = sizeof
        self._marker = marker
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._dropped = 0
        self._wakeup = asyncio.Event()
        self._closed = False  # the follower left: stop now
        for item in reversed(backlog):  # newest first, so a byte bound keeps the newest
            size = sizeof(item)
            if self._bytes + size > max_bytes:
                break
            self._items.appendleft((item, size))
            self._bytes += size

    @property
    def pending(self) -> int:
        """Items queued and not yet taken (never more than maxsize)."""
        return len(self._items)

    @property
    def pending_bytes(self) -> int:
        """Bytes (as `sizeof` counts them) of the items queued."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Items missed since the last marker was delivered."""
        return self._dropped

    def offer(self, item: T) -> None:
        """Queue `item`, or count it as dropped when the queue is full. Never blocks."""
        if self._closed:
            return
        if self._dropped and self._has_room(0):
            # Room again: the marker goes where the gap is, before the newer item.
            self._push(self._marker(self._dropped), 0)
            self._dropped = 0
        size = self._sizeof(item)
        if self._has_room(size):
            self._push(item, size)
        else:
            self._dropped += 1
        self._wakeup.set()

    def _has_room(self, size: int) -> bool:
        return len(self._items) < self._maxsize and self._bytes + size <= self._max_bytes

    def _push(self, item: T, size: int) -> None:
        self._items.append((item, size))
        self._bytes += size

    def close(self) -> None:
        """Unsubscribe and end iteration now. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._items.clear()
        self._bytes = 0
        self._owner.discard(self)
        self._wakeup.set()

    async def aclose(self) -> None:
        """Async spelling of `close()`, so the server can close any async iterator the same way."""
        self.close()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._items:
                item, size = self._items.popleft()
                self._bytes -= size
                return item
            if self._dropped:
                # Caught up after a gap with nothing newer published: say so now.
                count, self._dropped = self._dropped, 0
                return self._marker(count)
            self._wakeup.clear()
            await self._wakeup.wait()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Broadcaster(Generic[T]):
    """Publish items to every current subscriber and remember the last `history` of them.

    Args:
        marker: builds the item that tells a subscriber how many items it missed
            (`drop_marker` for dict streams).
        history: how many recent items `recent()` can return.
        history_bytes: how many bytes (as `sizeof` counts them) the recent items may take.
        sizeof: an item's size in bytes; without it only item counts bound the buffers.
    """

    def __init__(
        self,
        marker: Callable[[int], T],
        history: int = DEFAULT_HISTORY,
        *,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        sizeof: Sizer = _unsized,
    ) -> None:
        self._marker = marker
        self._history = history
        self._history_bytes = history_bytes
        self._sizeof = sizeof
        self._recent: deque[tuple[T, int]] = deque()
        self._recent_bytes = 0
        self._subscribers: set[Subscription[T]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, item: T) -> None:
        """Record `item` and offer it to every subscriber. Synchronous; never blocks."""
        size = self._sizeof(item)
        self._recent.append((item, size))
        self._recent_bytes += size
        # The newest item always stays, even alone over the byte bound.
        while len(self._recent) > 1 and (
            len(self._recent) > self._history or self._recent_bytes > self._history_bytes
        ):
            self._recent_bytes -= self._recent.popleft()[1]
        for subscription in list(self._subscribers):
            subscription.offer(item)

    def recent(self, n: int | None = None) -> list[T]:
        """The last `n` items (all remembered ones when `n` is None), oldest first."""
        if n is not None and n <= 0:
            return []
        items = [item for item, _ in self._recent]
        return items if n is None else items[-n:]

    @property
    def recent_bytes(self) -> int:
        """Bytes (as `sizeof` counts them) the recent items take."""
        return self._recent_bytes

    def subscribe(
        self, maxsize: int = DEFAULT_QUEUE, backlog: int = 0, max_bytes: int = DEFAULT_QUEUE_BYTES
    ) -> Subscription[T]:
        """A new follower that first receives the last `backlog` items, then every new one.

        Taking the backlog and subscribing happen in one step, so nothing is missed or repeated
        between them. The backlog is capped at `maxsize` and `max_bytes` so the bounds hold from
        the start.
        """
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        subscription = Subscription(
            self,
            maxsize,
            self._marker,
            self.recent(min(backlog, maxsize)),
            max_bytes=max_bytes,
            sizeof=self._sizeof,
        )
        self._subscribers.add(subscription)
        return subscription

    def discard(self, subscription: Subscription[T]) -> None:
        """Forget a subscription (called by `Subscription.close`)."""
        self._subscribers.discard(subscription)
