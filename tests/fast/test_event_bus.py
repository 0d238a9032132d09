"""Fast tier: the on-loop fan-out of container events to waiters."""

from __future__ import annotations

import asyncio

import pytest

from devsupervisor.errors import DockerUnavailable
from devsupervisor.stack.docker_events import ContainerEvent
from devsupervisor.stack.event_bus import ContainerEvents


def _event(
    action: str,
    service: str = "postgres",
    *,
    health: str | None = None,
    exit_code: int | None = None,
) -> ContainerEvent:
    return ContainerEvent(action, "c1", service, time=0.0, health=health, exit_code=exit_code)


def test_subscription_queues_matching_events_in_order() -> None:
    """Events published after subscribe() are queued for the subscriber, filtered, in order."""

    async def body() -> list[str]:
        bus = ContainerEvents()
        with bus.subscribe(lambda e: e.service == "postgres") as sub:
            bus.publish(_event("start"))
            bus.publish(_event("start", service="redpanda"))
            bus.publish(_event("die", exit_code=1))
            return [(await sub.next(1)).action, (await sub.next(1)).action]

    assert asyncio.run(body()) == ["start", "die"]


def test_wait_for_wakes_on_the_event_and_times_out_without_it() -> None:
    """wait_for returns the first matching event; without one it raises TimeoutError."""

    async def body() -> None:
        bus = ContainerEvents()
        loop = asyncio.get_running_loop()
        loop.call_soon(bus.publish, _event("health_status", health="healthy"))
        got = await bus.wait_for(lambda e: e.health == "healthy", 1)
        assert got.action == "health_status"
        with pytest.raises(TimeoutError):
            await bus.wait_for(lambda e: True, 0.01)
        assert not bus._subscriptions, "closed subscriptions are dropped"

    asyncio.run(body())


def test_lost_stream_fails_waiters_and_wait_live() -> None:
    """A lost stream fails waiting subscriptions at once; wait_live then refuses too."""

    async def body() -> None:
        bus = ContainerEvents()
        bus.subscribed()
        await bus.wait_live(0)
        waiter = asyncio.ensure_future(bus.wait_for(lambda e: True, 10))
        await asyncio.sleep(0)
        bus.lost("connection refused")
        with pytest.raises(DockerUnavailable, match="connection refused"):
            await waiter
        with pytest.raises(DockerUnavailable, match="connection refused"):
            await bus.wait_live(10)
        bus.subscribed()
        await bus.wait_live(0)

    asyncio.run(body())


def test_wait_live_waits_for_the_first_subscription() -> None:
    """Before the stream first answers, wait_live waits for it, bounded by its timeout."""

    async def body() -> None:
        bus = ContainerEvents()
        with pytest.raises(DockerUnavailable, match="not subscribed"):
            await bus.wait_live(0.01)
        asyncio.get_running_loop().call_soon(bus.subscribed)
        await bus.wait_live(1)
        assert bus.live

    asyncio.run(body())


def test_drain_returns_what_is_queued() -> None:
    """drain() hands over the queued events without waiting."""

    async def body() -> None:
        bus = ContainerEvents()
        with bus.subscribe() as sub:
            assert sub.drain() == []
            bus.publish(_event("kill"))
            bus.publish(_event("die"))
            assert [e.action for e in sub.drain()] == ["kill", "die"]

    asyncio.run(body())
