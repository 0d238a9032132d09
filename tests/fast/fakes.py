"""Fakes for the fast tier: a fake clock with timers, fake platform targets whose "processes"
live in a `World` that checks the process invariants on every spawn, and a fake compose side.

The owners under test are the real ones (`PlatformOwner`, `Orchestrator`); only what they drive
(processes, compose, time) is scripted here.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from devsupervisor.platform.build import BuildResult
from devsupervisor.platform.ready import NotReady
from devsupervisor.platform.target import ExitSink, LineSink


class FakeTimer:
    def __init__(self, timers: FakeTimers, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._timers = timers

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeTimer) -> bool:
        return self.when < other.when


class FakeTimers:
    """A clock that only moves when told, and `call_later` on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list[FakeTimer] = []

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> FakeTimer:
        timer = FakeTimer(self, self.now + delay, lambda: callback(*args))
        heapq.heappush(self._heap, timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer that comes due on the way, in order."""
        end = self.now + seconds
        while self._heap and self._heap[0].when <= end:
            timer = heapq.heappop(self._heap)
            self.now = max(self.now, timer.when)
            if not timer.cancelled:
                timer.callback()
        self.now = end


class InvariantBroken(AssertionError):
    """Two platform processes alive at once where only one may be."""


@dataclass
class World:
    """Every fake platform process, alive or gone. `max_alive` is 1 except during an overlap
    swap (2)."""

    alive: dict[int, FakeTarget] = field(default_factory=dict)
    spawned: int = 0
    pids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    builds_ok: bool = True
    ready_ok: bool = True
    build_gate: asyncio.Event | None = None
    max_alive: int = 1
    log: list[str] = field(default_factory=list)

    def spawn(self, target: FakeTarget) -> int:
        allowed = self.max_alive if target.overlap_swap else 1
        if len(self.alive) >= allowed:
            raise InvariantBroken(f"spawn with {sorted(self.alive)} alive")
        pid = next(self.pids)
        self.alive[pid] = target
        self.spawned += 1
        self.log.append(f"spawn {pid}")
        return pid

    def kill(self, pid: int) -> None:
        self.alive.pop(pid, None)
        self.log.append(f"gone {pid}")


class FakeTarget:
    """A platform target whose builds and processes are instant and scripted by the `World`."""

    mode = "binary"
    recreates_in_place = False
    notify_status: str | None = None

    def __init__(self, world: World, *, overlap: bool = False, name: str = "t") -> None:
        self.world = world
        self.name = name
        self._overlap = overlap
        self._pid: int | None = None
        self._exit_sink: ExitSink = lambda code: None
        self.exit_code: int | None = None

    @property
    def overlap_swap(self) -> bool:
        return self._overlap

    def fork(self) -> FakeTarget:
        twin = FakeTarget(self.world, overlap=self._overlap, name=self.name + "'")
        twin.set_exit_sink(self._exit_sink)
        return twin

    async def build(self, on_line: LineSink) -> BuildResult:
        await asyncio.sleep(0)
        if self.world.build_gate is not None:
            await self.world.build_gate.wait()
        await asyncio.sleep(0)
        ok = self.world.builds_ok
        on_line("compiling")
        return BuildResult(ok, 0 if ok else 2, 0.0, () if ok else ("syntax error",))

    async def start(self) -> None:
        self._pid = self.world.spawn(self)

    async def wait_ready(self) -> None:
        await asyncio.sleep(0)
        if not self.is_running():
            raise NotReady("exited during start")
        if not self.world.ready_ok:
            raise NotReady("not ready")

    async def stop(self) -> None:
        await asyncio.sleep(0)
        if self._pid is not None:
            self.world.kill(self._pid)
            self._pid = None

    def crash(self, code: int = 1) -> None:
        """The process dies on its own."""
        if self._pid is not None:
            self.world.kill(self._pid)
            self._pid = None
            self.exit_code = code
            self._exit_sink(code)

    def is_running(self) -> bool:
        return self._pid is not None and self._pid in self.world.alive

    def has_artefact(self) -> bool:
        return True

    def identity(self) -> None:
        return None

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    @property
    def container(self) -> str | None:
        return None

    def set_exit_sink(self, sink: ExitSink) -> None:
        self._exit_sink = sink


class FakeServices:
    """The compose side: `bring_up` waits on `gate` (a slow compose) and fails when told."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.fail: str | None = None
        self.up_calls: list[tuple[str, str | None]] = []
        self.down_calls: list[str] = []
        self.stopped = False
        self.platform_service = "platform"

    async def bring_up(
        self,
        stack: str,
        previous: str | None,
        *,
        alongside: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        from devsupervisor.errors import ComposeError

        self.up_calls.append((stack, previous))
        if alongside is not None:
            await alongside()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ComposeError(self.fail)

    async def services_of(self, stack: str) -> list[str]:
        return ["postgres"]

    def forget_models(self) -> None:
        pass

    def configure(self, config: Any) -> None:
        pass

    async def restart_service(self, name: str) -> Any:
        return {"name": name}

    async def down(self, stack: str) -> None:
        self.down_calls.append(stack)

    async def stop(self) -> None:
        self.stopped = True

    def status(self) -> list[Any]:
        return []

    def docker_status(self) -> Any:
        return {"available": True, "error": None}


async def settle(rounds: int = 50) -> None:
    """Let the loop run every ready callback a few rounds (the owners are all on this loop)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
