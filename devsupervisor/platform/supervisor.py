"""Supervises the active platform target: build first, swap only on success, restart on crash.

Runs entirely on the daemon's event loop. The reload pipeline is one task at a time with two
phases: `build` (cancellable: a newer change makes its result useless) and `swap` (stop old,
start new, wait ready; never interrupted, so the platform is never left half-swapped). Changes
arriving during the swap are held by the scheduler and build right after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from devsupervisor.logs.pipeline import get_logger, utc_iso
from devsupervisor.platform.ready import NotReady
from devsupervisor.platform.scheduler import ReloadScheduler
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.states import PLATFORM_EDGES, PlatformState, transition

log = get_logger()

# Five exits within a minute is a crash loop (issue 2): restarting again only burns CPU and
# floods the log; wait for a source change or an explicit restart instead.
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
# Backoff between crash restarts of the platform: quick first retry, capped so a flapping
# binary still comes back within seconds once fixed.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0

Phase = Literal["build", "swap"]


class PlatformSupervisor:
    """Owns the platform state machine for one target (binary or container)."""

    def __init__(
        self,
        target: PlatformTarget,
        *,
        debounce: float,
        on_output: Callable[[str], None] = lambda line: None,
        on_built: Callable[[], None] = lambda: None,
        on_state: Callable[[], None] = lambda: None,
        before_start: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.state = PlatformState.STOPPED
        self.restarts = 0
        self.last_build: dict[str, Any] | None = None
        self.last_reload: dict[str, float] | None = None
        self._clock = clock
        self._wall = wall_clock
        self._on_build_line = on_output
        self._on_built = on_built
        self._on_state = on_state
        # Run once, right before the first start: stops the previous stack's platform.
        self._before_start = before_start
        loop = asyncio.get_running_loop()
        self.scheduler = ReloadScheduler(
            debounce, self._on_fire, clock=clock, call_later=loop.call_later
        )
        self._task: asyncio.Task[bool] | None = None
        self._phase: Phase | None = None
        self._generation = 0
        self._exits: deque[float] = deque()
        self._restart_timer: asyncio.TimerHandle | None = None
        self._restart_task: asyncio.Task[bool] | None = None
        self._started_at: float | None = None
        target.set_exit_sink(self._on_exit)

    # -- state ------------------------------------------------------------------------------

    def _set(self, state: PlatformState) -> None:
        if state != self.state:
            self.state = transition(PLATFORM_EDGES, self.state, state)
            self._on_state()

    @property
    def uptime(self) -> float | None:
        if self._started_at is None or not self.target.is_running():
            return None
        return round(self._clock() - self._started_at, 3)

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.target.mode,
            "state": self.state.value,
            "pid": self.target.pid,
            "container": self.target.container,
            "uptime": self.uptime,
            "restarts": self.restarts,
            "last_build": self.last_build,
            "last_reload": self.last_reload,
        }

    # -- entry points -----------------------------------------------------------------------

    async def enter(self, *, build_first: bool) -> bool:
        """Bring the platform up: build when sources changed (or nothing to run), then start."""
        if build_first or not self.target.has_artefact():
            self.scheduler.take()
            return await self._run_pipeline(["startup"], self._clock())
        return await self._start_fresh()

    def on_changes(self, paths: frozenset[Path]) -> None:
        """Verified content changes from the watcher (called on the loop)."""
        self._generation += 1
        log.info("change.detected", paths=[str(p) for p in sorted(paths)][:20], count=len(paths))
        if self.scheduler.note(paths) and self._phase == "build" and self._task is not None:
            self._task.cancel()

    async def rebuild(self, trigger: list[str] | None = None) -> bool:
        """Rebuild and restart now, whatever changed. Returns whether the new build serves."""
        await self._interrupt_build()
        pending = [str(p) for p in self.scheduler.take()]
        return await self._run_pipeline(trigger or ["manual", *pending], self._clock())

    async def restart(self) -> bool:
        """Stop and start the current artefact; clears crash history (leaves crashloop)."""
        await self._interrupt_build()
        await self._await_restart()
        self._exits.clear()
        await self.target.stop()
        return await self._start_fresh()

    async def stop(self) -> None:
        """Stop everything: pending builds, timers and the platform itself."""
        self.scheduler.pause()
        await self._await_restart()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})
        await self.target.stop()
        self._started_at = None
        self._set(PlatformState.STOPPED)

    # -- the reload pipeline ----------------------------------------------------------------

    def _on_fire(self, paths: list[Path], first_at: float) -> None:
        if self._task is not None and not self._task.done():
            return  # the scheduler holds changes while busy; this is only a safety net
        trigger = [str(p) for p in paths]
        self._task = asyncio.get_running_loop().create_task(self._pipeline(trigger, first_at))

    async def _run_pipeline(self, trigger: list[str], first_at: float) -> bool:
        self._task = asyncio.get_running_loop().create_task(self._pipeline(trigger, first_at))
        done, _ = await asyncio.wait({self._task})
        task = done.pop()
        return not task.cancelled() and task.result()

    async def _interrupt_build(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        if self._phase == "build":
            task.cancel()
        await asyncio.wait({task})

    async def _pipeline(self, trigger: list[str], first_at: float) -> bool:
        self.scheduler.set_busy(True)
        try:
            return await self._build_and_swap(trigger, first_at)
        finally:
            self._phase = None
            self.scheduler.set_busy(False)

    async def _build_and_swap(self, trigger: list[str], first_at: float) -> bool:
        generation = self._generation
        before = self.state
        t_build = self._clock()
        detect = max(0.0, t_build - first_at)
        self._phase = "build"
        self._cancel_restart()
        self._set(PlatformState.BUILDING)
        log.info("build.started", trigger=trigger, mode=self.target.mode)
        try:
            result = await self.target.build(self._on_build_line)
        except asyncio.CancelledError:
            log.info("build.cancelled", trigger=trigger, reason="sources changed while building")
            self._set(self._resting_state(before))
            raise
        build = self._clock() - t_build
        self.last_build = {
            "ok": result.ok,
            "started_at": utc_iso(self._wall() - build),
            "duration": round(build, 4),
            "trigger": trigger,
            "error": result.error_tail,
        }
        if not result.ok:
            log.error(
                "build.failed",
                trigger=trigger,
                exit_code=result.exit_code,
                duration=round(build, 4),
                output="\n".join(result.output),
            )
            self._set(PlatformState.BUILD_FAILED)
            return False
        if generation != self._generation:
            log.info("build.discarded", trigger=trigger, reason="inputs changed while it ran")
            self._set(self._resting_state(before))
            return False
        log.info("build.succeeded", trigger=trigger, duration=round(build, 4))
        self._on_built()
        self._phase = "swap"
        if self._restart_task is not None and not self._restart_task.done():
            await asyncio.wait({self._restart_task})
        t_stop = self._clock()
        if not self.target.recreates_in_place:
            await self.target.stop()
        t_start = self._clock()
        ok = await self._start_and_wait(trigger=trigger)
        if ok:
            t_ready_done = self._clock()
            assert self._started_at is not None
            self.last_reload = {
                "detect": round(detect, 4),
                "build": round(build, 4),
                "stop": round(t_start - t_stop, 4),
                "start": round(self._started_at - t_start, 4),
                "ready": round(t_ready_done - self._started_at, 4),
                "total": round(t_ready_done - first_at, 4),
            }
            log.info("platform.reloaded", trigger=trigger, **self.last_reload)
        return ok

    def _resting_state(self, before: PlatformState) -> PlatformState:
        """Where a dropped build returns to: what ran before it, judged by what runs now."""
        if before == PlatformState.BUILDING:
            before = PlatformState.STOPPED
        if before in (PlatformState.RUNNING, PlatformState.BUILD_FAILED, PlatformState.STARTING):
            return before if self.target.is_running() else PlatformState.STOPPED
        return before

    async def _start_fresh(self) -> bool:
        self._phase = "swap"
        try:
            return await self._start_and_wait(trigger=None)
        finally:
            self._phase = None

    async def _start_and_wait(self, *, trigger: list[str] | None) -> bool:
        self._set(PlatformState.STARTING)
        if self._before_start is not None:
            hook, self._before_start = self._before_start, None
            await hook()
        await self.target.start()
        self._started_at = self._clock()
        log.info(
            "platform.started",
            pid=self.target.pid,
            container=self.target.container,
            mode=self.target.mode,
            trigger=trigger,
        )
        try:
            await self.target.wait_ready()
        except NotReady as exc:
            # Alive but not serving within the timeout counts as a failed start, like an exit.
            await self.target.stop()
            self._crashed(self.target.exit_code, reason=str(exc))
            return False
        self._set(PlatformState.RUNNING)
        log.info(
            "platform.ready",
            pid=self.target.pid,
            container=self.target.container,
            after=round(self._clock() - self._started_at, 4),
        )
        return True

    # -- crashes ----------------------------------------------------------------------------

    def _on_exit(self, code: int | None) -> None:
        if self.state == PlatformState.STARTING:
            return  # the start in flight sees it as NotReady and accounts for it there
        if self.state == PlatformState.BUILDING:
            # The old one died while a build runs: the swap starts the new one anyway.
            log.warning("platform.exited", exit_code=code, reason="exited", mode=self.target.mode)
            self._started_at = None
            return
        self._crashed(code, reason="exited")

    def _crashed(self, code: int | None, *, reason: str) -> None:
        now = self._clock()
        uptime = None if self._started_at is None else round(now - self._started_at, 3)
        log.warning(
            "platform.exited", exit_code=code, reason=reason, uptime=uptime, mode=self.target.mode
        )
        self._started_at = None
        self._exits.append(now)
        while self._exits and now - self._exits[0] > CRASH_WINDOW:
            self._exits.popleft()
        self._set(PlatformState.CRASHED)
        if len(self._exits) >= CRASH_LIMIT:
            self._set(PlatformState.CRASHLOOP)
            log.error("platform.crashloop", exits=len(self._exits), window=CRASH_WINDOW)
            return
        delay = min(BACKOFF_INITIAL * 2 ** (len(self._exits) - 1), BACKOFF_MAX)
        log.info("platform.restart_scheduled", delay=delay, exits=len(self._exits))
        loop = asyncio.get_running_loop()
        self._restart_timer = loop.call_later(delay, self._restart_after_crash)

    def _restart_after_crash(self) -> None:
        self._restart_timer = None
        if self.state != PlatformState.CRASHED or (self._task and not self._task.done()):
            return
        self.restarts += 1
        self._restart_task = asyncio.get_running_loop().create_task(self._start_fresh())

    def _cancel_restart(self) -> None:
        """Drop a pending crash restart; one already starting is left to finish (see
        `_await_restart`)."""
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None

    async def _await_restart(self) -> None:
        self._cancel_restart()
        if self._restart_task is not None and not self._restart_task.done():
            await asyncio.wait({self._restart_task})
