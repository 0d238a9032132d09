"""Broadcaster: ring buffer, fan-out, bounded queues with a drop marker, unsubscribe."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from devsupervisor.logs.broadcast import Broadcaster, Subscription, drop_marker

Item = int | str


def marker(count: int) -> str:
    return f"dropped {count}"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))


async def take(sub: Subscription[Item], n: int) -> list[Item]:
    return [await anext(sub) for _ in range(n)]


def test_recent_keeps_last_items_oldest_first() -> None:
    """recent(n) returns the last n published items, bounded by the history size."""
    hub: Broadcaster[Item] = Broadcaster(marker, history=3)
    for i in range(5):
        hub.publish(i)
    assert hub.recent() == [2, 3, 4]
    assert hub.recent(2) == [3, 4]
    assert hub.recent(10) == [2, 3, 4]
    assert hub.recent(0) == []


def test_every_subscriber_gets_every_item_in_order() -> None:
    """Two subscribers each receive all items published after they subscribed, in order."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        hub.publish(-1)  # before subscribing: not delivered
        first, second = hub.subscribe(maxsize=10), hub.subscribe(maxsize=10)
        for i in range(5):
            hub.publish(i)
        assert await take(first, 5) == [0, 1, 2, 3, 4]
        assert await take(second, 5) == [0, 1, 2, 3, 4]

    run(scenario())


def test_subscriber_waits_for_next_publish() -> None:
    """A subscriber blocked on an empty queue wakes up when an item is published."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        sub = hub.subscribe()
        waiter = asyncio.create_task(anext(sub))
        await asyncio.sleep(0)
        assert not waiter.done()
        hub.publish("x")
        assert await waiter == "x"

    run(scenario())


def test_full_queue_drops_and_marks_at_catch_up() -> None:
    """A stalled subscriber holds at most maxsize items; on catching up it gets one marker."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        sub = hub.subscribe(maxsize=3)
        for i in range(10):
            hub.publish(i)
            assert sub.pending <= 3
        assert sub.dropped == 7
        assert await take(sub, 4) == [0, 1, 2, "dropped 7"]
        hub.publish(10)
        assert await anext(sub) == 10

    run(scenario())


def test_marker_sits_where_the_gap_is() -> None:
    """When room frees while publishing goes on, the marker comes before the newer items."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        sub = hub.subscribe(maxsize=2)
        for i in range(5):  # keeps 0, 1; drops 2, 3, 4
            hub.publish(i)
        assert await anext(sub) == 0  # one slot free
        hub.publish(5)  # the marker takes the free slot; 5 is dropped in turn
        hub.publish(6)
        assert await take(sub, 2) == [1, "dropped 3"]
        hub.publish(7)  # room: marker for 5 and 6, then 7
        assert await take(sub, 2) == ["dropped 2", 7]

    run(scenario())


def test_a_stalled_subscriber_does_not_affect_others() -> None:
    """With one subscriber never reading, another still receives every item."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        stalled = hub.subscribe(maxsize=5)
        reader = hub.subscribe(maxsize=100_000)
        for i in range(50_000):
            hub.publish(i)
        assert stalled.pending == 5
        assert await take(reader, 50_000) == list(range(50_000))

    run(scenario())


def test_close_unsubscribes_and_ends_iteration() -> None:
    """Closing a subscription removes it from the broadcaster and ends its iteration at once."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        sub = hub.subscribe()
        hub.publish(1)
        waiter_sub = hub.subscribe()
        waiter = asyncio.create_task(anext(waiter_sub, "end"))
        await asyncio.sleep(0)
        assert hub.subscribers == 2
        sub.close()
        await waiter_sub.aclose()
        assert hub.subscribers == 0
        assert await waiter == "end"  # a waiting iterator ends when closed
        assert [item async for item in sub] == []  # queued items are discarded on close

    run(scenario())


def test_async_with_unsubscribes() -> None:
    """Leaving `async with` on a subscription unsubscribes it."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        async with hub.subscribe() as sub:
            hub.publish("a")
            assert await anext(sub) == "a"
            assert hub.subscribers == 1
        assert hub.subscribers == 0

    run(scenario())


def test_backlog_then_live_without_gap() -> None:
    """subscribe(backlog=n) yields the last n items, then new ones, capped at maxsize."""

    async def scenario() -> None:
        hub: Broadcaster[Item] = Broadcaster(marker)
        for i in range(10):
            hub.publish(i)
        sub = hub.subscribe(maxsize=5, backlog=3)
        hub.publish(10)
        assert await take(sub, 4) == [7, 8, 9, 10]
        capped = hub.subscribe(maxsize=2, backlog=100)
        assert capped.pending == 2

    run(scenario())


def test_subscribe_rejects_zero_maxsize() -> None:
    """A queue must hold at least one item."""
    with pytest.raises(ValueError, match="maxsize"):
        Broadcaster(marker).subscribe(maxsize=0)


def test_drop_marker_is_an_event_record() -> None:
    """The dict marker has ts, event and level like every event, plus the count."""
    record = drop_marker(4)
    assert record["event"] == "stream.dropped"
    assert record["level"] == "warning"
    assert record["dropped"] == 4
    assert record["ts"].endswith("Z")
