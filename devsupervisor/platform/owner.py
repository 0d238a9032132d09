"""The platform lifecycle's one owner: a task that takes intents from a queue and alone changes
the platform's state (build first, swap only on success, restart on crash).

Every way in (a saved file, `devsup rebuild`, `restart platform`, a crash, a stack switch or
config change, `stop`) is an intent (`platform/intents.py`) posted with `post()`; callers that
want the result await the intent's outcome future. The owner serves one intent at a time, but
keeps reading the queue while a build runs (a newer change cancels it, a stop or a new target
interrupts it, another rebuild joins it) and while a new process gets ready (a stop interrupts
it). Everything else that arrives meanwhile waits its turn.

Processes live in the `ProcessSlot`: a new one starts only after the old one stopped (or, in an
overlap swap, the old one stops once the new one is ready), and `stop` leaves none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform import build_step
from devsupervisor.platform import intents as i
from devsupervisor.platform.crash_policy import CrashPolicy
from devsupervisor.platform.intent_queue import IntentQueue
from devsupervisor.platform.ready import NotReady
from devsupervisor.platform.scheduler import ReloadScheduler
from devsupervisor.platform.slot import ProcessSlot
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.states import PLATFORM_EDGES, PlatformState, resting_state, transition
from devsupervisor.status_types import BuildInfo, PlatformStatus, ReloadBreakdown

log = get_logger()

# The config's default `platform.build_timeout`: a cold build of a large module takes minutes.
BUILD_TIMEOUT = 600.0


class PlatformOwner:
    """Owns the platform state machine. Construct on the loop, `start()`, then `post()`."""

    def __init__(
        self,
        target: PlatformTarget,
        *,
        debounce: float,
        build_timeout: float = BUILD_TIMEOUT,
        on_build_line: Callable[[str], None] = lambda line: None,
        on_built: Callable[[PlatformTarget], None] = lambda target: None,
        on_state: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        call_later: Callable[..., asyncio.TimerHandle] | None = None,
    ) -> None:
        self.target = target
        # A build that never ends (a hung generator, a prompt) must end as build_failed; the
        # stack owner sets this from `platform.build_timeout` (live reloads included).
        self.build_timeout = build_timeout
        self.state = PlatformState.STOPPED
        self.restarts = 0
        self.last_build: BuildInfo | None = None
        self.last_reload: ReloadBreakdown | None = None
        self._slot = ProcessSlot(
            lambda target, start, code: self.post(i.Exited(target, start, code)),
            on_change=on_state,
        )
        self._clock = clock
        self._wall = wall_clock
        self._on_build_line = on_build_line
        self._on_built = on_built
        self._on_state = on_state
        loop = asyncio.get_running_loop()
        self._call_later = call_later or loop.call_later
        self.scheduler = ReloadScheduler(
            debounce, self._build_due, clock=clock, call_later=self._call_later
        )
        self._crashes = CrashPolicy(
            clock=clock,
            call_later=self._call_later,
            on_due=lambda start: self.post(i.CrashRestartDue(start)),
        )
        self._inbox = IntentQueue()
        # Rebuild callers whose build was superseded by a newer change: the next build answers.
        self._carried = i.Waiters()
        self._task: asyncio.Task[None] | None = None

    # -- the outside --------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="platform-owner")
        return self._task

    def post(self, intent: i.Intent) -> None:
        """Queue an intent (loop only; other threads go through call_soon_threadsafe)."""
        self._inbox.post(intent)

    async def ask(self, make: Callable[[i.Outcome], i.Intent]) -> bool:
        """Post the intent `make(outcome)` and wait for its outcome."""
        outcome: i.Outcome = asyncio.get_running_loop().create_future()
        self.post(make(outcome))
        return await outcome

    @property
    def running_target(self) -> PlatformTarget | None:
        """The target whose process serves (or should)."""
        return self._slot.running

    @property
    def live_targets(self) -> list[PlatformTarget]:
        """Every target whose process may be alive: two during an overlap swap (state file)."""
        return self._slot.live

    @property
    def uptime(self) -> float | None:
        started = self._slot.started_at
        if started is None or not self._slot.is_alive():
            return None
        return round(self._clock() - started, 3)

    def status(self) -> PlatformStatus:
        shown = self._slot.running or self.target
        return {
            "mode": shown.mode,
            "state": self.state.value,
            "pid": shown.pid,
            "container": shown.container,
            "uptime": self.uptime,
            "restarts": self.restarts,
            "last_build": self.last_build,
            "last_reload": self.last_reload,
            "notify_status": shown.notify_status,
        }

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                intent = await self._inbox.next()
                await self._serve(intent)
        except asyncio.CancelledError:
            # Cancelled from outside (daemon teardown): never leave a process behind.
            await asyncio.shield(self._slot.stop_all())
            raise
        finally:
            self._inbox.close()
            self._carried.resolve(False)

    async def _serve(self, intent: i.Intent) -> None:
        match intent:
            case i.SourcesChanged(paths=paths):
                log.info(
                    "change.detected", paths=[str(p) for p in sorted(paths)][:20], count=len(paths)
                )
                self.scheduler.note(paths)
            case i.BuildDue(paths=paths, first_at=first_at):
                waiters = i.Waiters()
                await self._build_and_swap([str(p) for p in paths], first_at, waiters)
            case i.Rebuild(outcome=outcome, trigger=trigger):
                waiters = i.Waiters.of(outcome)
                pending = [str(p) for p in self.scheduler.take()]
                await self._build_and_swap([*trigger, *pending], self._clock(), waiters)
            case i.Restart(outcome=outcome):
                self._crashes.reset()
                await self._slot.stop_all()
                i.resolve(outcome, await self._start(self.target, trigger=None))
            case i.Exited():
                self._on_exited(intent)
            case i.CrashRestartDue(start=start):
                if start == self._slot.starts and self.state == PlatformState.CRASHED:
                    self.restarts += 1
                    await self._slot.stop_all()  # what the dead process left behind
                    await self._start(self.target, trigger=None)
            case i.Enter(target=target, build_first=build_first, outcome=outcome):
                self._crashes.reset()
                self.target = target
                waiters = i.Waiters.of(outcome)
                if build_first or not target.has_artefact():
                    self.scheduler.take()
                    await self._build_and_swap(["startup"], self._clock(), waiters)
                else:
                    waiters.take(self._carried)
                    await self._slot.stop_all()
                    waiters.resolve(await self._start(target, trigger=None))
            case i.SetPaused(paused=paused):
                if paused:
                    self.scheduler.pause()
                else:
                    self.scheduler.resume()
            case i.Stop(outcome=outcome, final=final):
                self.scheduler.pause()
                self._crashes.cancel()
                if final:
                    self._inbox.close()
                self._carried.resolve(False)
                await self._slot.stop_all()
                self._set(PlatformState.STOPPED)
                i.resolve(outcome, True)

    # -- build and swap -------------------------------------------------------------------------

    def _build_due(self, paths: list[Any], first_at: float) -> None:
        self.post(i.BuildDue(tuple(paths), first_at))  # the scheduler's timer: served in turn

    async def _build_and_swap(
        self, trigger: list[str], first_at: float, waiters: i.Waiters
    ) -> None:
        waiters.take(self._carried)
        self.scheduler.set_busy(True)
        try:
            ok = await self._build_then_swap(trigger, first_at, waiters)
        finally:
            self.scheduler.set_busy(False)
        if ok is None:
            self._carried.take(waiters)  # superseded: the next build answers them
        else:
            waiters.resolve(ok)

    async def _build_then_swap(
        self, trigger: list[str], first_at: float, waiters: i.Waiters
    ) -> bool | None:
        """True/False: served or not. None: superseded by newer changes (no answer yet)."""
        before = self.state
        target = self.target
        trigger = build_step.shown(trigger)
        self._crashes.cancel()
        t_build = self._clock()
        self._set(PlatformState.BUILDING)
        log.info("build.started", trigger=trigger, mode=target.mode)
        build = asyncio.ensure_future(
            build_step.bounded_build(
                target, self._on_build_line, timeout=self.build_timeout, clock=self._clock
            )
        )
        held: list[i.Intent] = []
        superseded = False
        while (intent := await self._inbox.next_or(build)) is not None:
            match intent:
                case i.SourcesChanged(paths=paths):
                    log.info("change.detected", paths=[str(p) for p in sorted(paths)][:20])
                    if self.scheduler.note(paths) and not build.done():
                        superseded = True
                        build.cancel()
                case i.Rebuild(outcome=outcome):
                    waiters.add(outcome)  # the build running now covers it
                case i.SetPaused():
                    await self._serve(intent)
                case i.Enter():
                    superseded = True  # the new target's build answers this one's callers
                    build.cancel()
                    held.append(intent)
                case i.Stop():
                    build.cancel()
                    held.append(intent)
                case _:
                    held.append(intent)
        self._inbox.defer(held)
        try:
            result = await build
        except asyncio.CancelledError:
            reason = "superseded" if superseded else "stopped"
            log.info("build.cancelled", trigger=trigger, reason=reason)
            self._set(resting_state(before, alive=self._slot.is_alive()))
            if not superseded:
                return False
            return None
        duration = self._clock() - t_build
        self.last_build = build_step.report(result, trigger, duration, self._wall())
        if not result.ok:
            self._set(PlatformState.BUILD_FAILED)
            self._after_failed_build()
            return False
        self._on_built(target)
        return await self._swap(target, trigger, (first_at, max(t_build, first_at)), duration)

    async def _swap(
        self, target: PlatformTarget, trigger: list[str], begun: tuple[float, float], build: float
    ) -> bool:
        """Stop the old process and start the new one (or overlap them). `begun`: clock times
        of the first change and of the build's start."""
        t_stop = self._clock()
        running = self._slot.running
        if running is target and target.overlap_swap and target.is_running():
            # The new process starts while the old one serves on the same held sockets; the
            # old one is stopped once the new one is ready (`_start`), or keeps serving.
            target = target.fork()
            self.target = target
            self._slot.begin_overlap(running)
        elif not (running is target and target.recreates_in_place):  # compose recreates
            await self._slot.stop_all()
        t_start = self._clock()
        ok = await self._start(target, trigger=trigger)
        if ok and self._slot.started_at is not None:
            marks = (*begun, t_stop, t_start, self._slot.started_at)
            self.last_reload = build_step.breakdown(*marks, build=build, done=self._clock())
            log.info("platform.reloaded", trigger=trigger, **self.last_reload)
        return ok

    def _after_failed_build(self) -> None:
        """The old process may have died while the build ran: then nothing serves."""
        if self._slot.running is not None and not self._slot.running.is_running():
            self._crashed(None, reason="exited while building")

    # -- start, stop ----------------------------------------------------------------------------

    async def _start(self, target: PlatformTarget, *, trigger: list[str] | None) -> bool:
        self._set(PlatformState.STARTING)
        self._slot.occupy(target)
        try:
            await target.start()
        except Exception as exc:  # a start that raises is a failed start, never a dead owner
            log.error("platform.start_failed", error=str(exc), mode=target.mode)
            await self._slot.stop_all()
            self._crashed(None, reason=str(exc))
            return False
        self._slot.started_at = self._clock()
        self._on_state()  # the state file names the new process before it is even ready
        log.info(
            "platform.started",
            pid=target.pid,
            container=target.container,
            mode=target.mode,
            trigger=trigger,
        )
        ready = asyncio.ensure_future(target.wait_ready())
        held: list[i.Intent] = []
        while (intent := await self._inbox.next_or(ready)) is not None:
            if isinstance(intent, i.Stop | i.Enter):  # the new process would be thrown away
                ready.cancel()
            held.append(intent)
        self._inbox.defer(held)
        try:
            await ready
        except asyncio.CancelledError:
            log.info("platform.start_interrupted", pid=target.pid)
            await self._slot.stop_all()
            self._set(PlatformState.STOPPED)
            return False
        except NotReady as exc:
            if await self._fall_back_to_retiring(target, str(exc)):
                return False
            # Alive but not serving within the timeout counts as a failed start, like an exit.
            await self._slot.stop_all()
            self._crashed(target.exit_code, reason=str(exc))
            return False
        await self._slot.stop_retiring()
        self._set(PlatformState.RUNNING)
        log.info(
            "platform.ready",
            pid=target.pid,
            container=target.container,
            after=round(self._clock() - self._slot.started_at, 4),
        )
        return True

    async def _fall_back_to_retiring(self, failed: PlatformTarget, reason: str) -> bool:
        """An overlap swap whose new process did not get ready: stop it; the old one, still
        serving, stays. False when there was no overlap."""
        kept = self._slot.retiring
        old = await self._slot.fall_back(failed)
        if old is None or kept is None:
            return False
        log.error("platform.swap_failed", reason=reason, pid=failed.pid, kept=kept.pid)
        self.target = old
        self._slot.started_at = self._clock()
        self._set(PlatformState.RUNNING)
        return True

    # -- crashes --------------------------------------------------------------------------------

    def _on_exited(self, exited: i.Exited) -> None:
        if not self._slot.is_current(exited.target, exited.start):
            return  # a process already replaced or stopped
        if self.state in (PlatformState.RUNNING, PlatformState.BUILD_FAILED):
            self._crashed(exited.code, reason="exited")

    def _crashed(self, code: int | None, *, reason: str) -> None:
        uptime = (
            None
            if self._slot.started_at is None
            else round(self._clock() - self._slot.started_at, 3)
        )
        log.warning(
            "platform.exited", exit_code=code, reason=reason, uptime=uptime, mode=self.target.mode
        )
        self._slot.started_at = None
        self._set(PlatformState.CRASHED)
        delay = self._crashes.crashed(self._slot.starts)
        if delay is None:
            self._set(PlatformState.CRASHLOOP)
            log.error("platform.crashloop", exits=self._crashes.exits)
        else:
            log.info("platform.restart_scheduled", delay=delay, exits=self._crashes.exits)

    def _set(self, state: PlatformState) -> None:
        if state != self.state:
            self.state = transition(PLATFORM_EDGES, self.state, state)
            self._on_state()
