"""The reload scheduler's rules on a fake clock (fast tier; the real tier is
test_reload_semantics.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import cast

from devsupervisor.platform.scheduler import ReloadScheduler


class FakeHandle:
    """Stands in for asyncio.TimerHandle: only cancel() and cancelled() are used."""

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class FakeTimers:
    """A clock and call_later that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None], FakeHandle]] = []

    def close(self) -> None:
        self.timers.clear()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        handle = FakeHandle()
        self.timers.append((self.now + delay, fn, handle))
        return cast(asyncio.TimerHandle, handle)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while True:
            due = [t for t in self.timers if t[0] <= target and not t[2].cancelled()]
            if not due:
                break
            when, fn, handle = min(due, key=lambda t: t[0])
            self.timers.remove((when, fn, handle))
            self.now = when
            fn()
        self.now = target


def make(debounce: float = 0.1) -> tuple[ReloadScheduler, FakeTimers, list[list[Path]]]:
    timers = FakeTimers()
    fired: list[list[Path]] = []
    sched = ReloadScheduler(
        debounce,
        lambda paths, first: fired.append(paths),
        clock=timers.clock,
        call_later=timers.call_later,
    )
    return sched, timers, fired


P = Path


def test_lone_change_fires_at_once() -> None:
    """The first change after quiet fires with no delay (leading edge)."""
    sched, timers, fired = make()
    sched.note(frozenset({P("a.go")}))
    assert fired == [[P("a.go")]]
    timers.close()


def test_stream_settles_into_one_fire() -> None:
    """Changes 10 ms apart after the first fire are merged into one fire after the quiet window."""
    sched, timers, fired = make()
    sched.note(frozenset({P("a.go")}))
    sched.set_busy(True)
    for i in range(20):
        timers.advance(0.01)
        assert sched.note(frozenset({P(f"f{i}.go")})) is True  # busy: cancel the running build
    sched.set_busy(False)
    assert len(fired) == 1
    timers.advance(0.099)
    assert len(fired) == 1
    timers.advance(0.002)
    assert len(fired) == 2 and len(fired[1]) == 20
    timers.close()


def test_endless_stream_fires_after_max_hold() -> None:
    """A stream that never goes quiet still fires once MAX_HOLD has passed."""
    sched, timers, fired = make(debounce=0.1)
    sched.note(frozenset({P("x")}))  # leading edge
    fired.clear()
    for i in range(300):
        timers.advance(0.05)
        sched.note(frozenset({P(f"f{i}")}))
        if fired:
            break
    assert fired and timers.now <= sched.max_hold + 0.2
    timers.close()


def test_pause_accumulates_and_resume_fires() -> None:
    """Paused: nothing fires, pending counts; resume fires everything at once."""
    sched, timers, fired = make()
    sched.pause()
    sched.note(frozenset({P("a")}))
    sched.note(frozenset({P("b")}))
    timers.advance(5)
    assert fired == [] and sched.pending == 2
    sched.resume()
    assert fired == [[P("a"), P("b")]] and sched.pending == 0
    timers.close()


def test_busy_holds_without_queueing() -> None:
    """While busy nothing fires; when it ends, one fire carries all held changes."""
    sched, timers, fired = make()
    sched.set_busy(True)
    sched.note(frozenset({P("a")}))
    timers.advance(1)
    sched.note(frozenset({P("b")}))
    timers.advance(1)
    assert fired == []
    sched.set_busy(False)
    timers.advance(0.2)
    assert fired == [[P("a"), P("b")]]
    timers.close()
