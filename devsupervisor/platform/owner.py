"""The platform lifecycle's one owner: a task that takes intents from a queue and alone changes
the platform's state (build first, swap only on success, restart on crash).

Every way in (a saved file, `devsup rebuild`, `restart platform`, a crash, a stack switch or
config change, `stop`) is an intent (`platform/intents.py`) posted with `post()`; callers that
want the result await the intent's outcome future. The owner serves one intent at a time, but
keeps reading the queue while a build runs (a newer change cancels it, a stop or a new target
interrupts it, another rebuild joins it) and while a new process gets ready (a stop interrupts
it). Everything else that arrives meanwhile waits its turn.

Processes: `_running` is the only target whose process may be alive; it is replaced only after
the old one was stopped (or, for an overlap swap, after the new one is ready), so at most one
platform serves, and `stop` leaves none.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from devsupervisor.backoff import PLATFORM_POLICY, RestartBudget
from devsupervisor.logs.pipeline import get_logger, utc_iso
from devsupervisor.platform import intents as i
from devsupervisor.platform.build import BuildResult
from devsupervisor.platform.ready import NotReady
from devsupervisor.platform.scheduler import ReloadScheduler
from devsupervisor.platform.target import ExitSink, PlatformTarget
from devsupervisor.states import PLATFORM_EDGES, PlatformState, transition
from devsupervisor.status_types import BuildInfo, PlatformStatus, ReloadBreakdown

log = get_logger()

# Changed paths named in a build's trigger (status, events): a checkout can change thousands.
TRIGGER_SHOWN = 20
# Intents that end whatever build or readiness wait is running: the result would be thrown away.
# The config's default `platform.build_timeout`: a cold build of a large module takes minutes.
BUILD_TIMEOUT = 600.0
_INTERRUPTING = (i.Stop, i.Enter)


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
        self._running: PlatformTarget | None = None
        # During an overlap swap: the old process, serving until the new one is ready.
        self._retiring: PlatformTarget | None = None
        self._clock = clock
        self._wall = wall_clock
        self._on_build_line = on_build_line
        self._on_built = on_built
        self._on_state = on_state
        loop = asyncio.get_running_loop()
        self._call_later = call_later or loop.call_later
        self.scheduler = ReloadScheduler(
            debounce, self._on_fire, clock=clock, call_later=self._call_later
        )
        self._budget = RestartBudget(PLATFORM_POLICY, clock=clock)
        self._queue: deque[i.Intent] = deque()
        self._wakeup = asyncio.Event()
        self._starts = 0
        self._started_at: float | None = None
        self._crash_timer: asyncio.TimerHandle | None = None
        # Rebuild callers whose build was superseded by a newer change: the next build answers.
        self._carried = i.Waiters()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    # -- the outside --------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="platform-owner")
        return self._task

    def post(self, intent: i.Intent) -> None:
        """Queue an intent (loop only; other threads go through call_soon_threadsafe)."""
        if self._closed:
            _answer(intent, False)
            return
        self._queue.append(intent)
        self._wakeup.set()

    async def ask(self, make: Callable[[i.Outcome], i.Intent]) -> bool:
        """Post the intent `make(outcome)` and wait for its outcome."""
        outcome: i.Outcome = asyncio.get_running_loop().create_future()
        self.post(make(outcome))
        return await outcome

    @property
    def running_target(self) -> PlatformTarget | None:
        """The target whose process serves (or should)."""
        return self._running

    @property
    def live_targets(self) -> list[PlatformTarget]:
        """Every target whose process may be alive: two during an overlap swap (state file)."""
        return [t for t in (self._retiring, self._running) if t is not None]

    @property
    def uptime(self) -> float | None:
        if self._started_at is None or self._running is None or not self._running.is_running():
            return None
        return round(self._clock() - self._started_at, 3)

    def status(self) -> PlatformStatus:
        shown = self._running or self.target
        return {
            "mode": shown.mode,
            "state": self.state.value,
            "pid": shown.pid,
            "container": shown.container,
            "uptime": self.uptime,
            "restarts": self.restarts,
            "last_build": self.last_build,
            "last_reload": self.last_reload,
        }

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                intent = await self._next()
                await self._serve(intent)
        except asyncio.CancelledError:
            # Cancelled from outside (daemon teardown): never leave a process behind.
            await asyncio.shield(self._stop_running())
            raise
        finally:
            self._closed = True
            while self._queue:
                _answer(self._queue.popleft(), False)
            self._carried.resolve(False)

    async def _next(self) -> i.Intent:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    async def _next_or(self, work: asyncio.Future[Any]) -> i.Intent | None:
        """The next intent, or None once `work` is done (whichever comes first)."""
        while not self._queue:
            if work.done():
                return None
            self._wakeup.clear()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        return self._queue.popleft()

    def _defer(self, held: list[i.Intent]) -> None:
        """Put intents that arrived during an operation back at the front, in order."""
        self._queue.extendleft(reversed(held))

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
                waiters = i.Waiters()
                waiters.add(outcome)
                pending = [str(p) for p in self.scheduler.take()]
                await self._build_and_swap([*trigger, *pending], self._clock(), waiters)
            case i.Restart(outcome=outcome):
                self._cancel_crash_timer()
                self._budget.reset()
                await self._stop_running()
                _resolve(outcome, await self._start(self.target, trigger=None))
            case i.Exited():
                self._on_exited(intent)
            case i.CrashRestartDue(start=start):
                if start == self._starts and self.state == PlatformState.CRASHED:
                    self.restarts += 1
                    await self._stop_running()  # what the dead process left behind
                    await self._start(self.target, trigger=None)
            case i.Enter(target=target, build_first=build_first, outcome=outcome):
                self._cancel_crash_timer()
                self._budget.reset()
                self.target = target
                waiters = i.Waiters()
                waiters.add(outcome)
                if build_first or not target.has_artefact():
                    self.scheduler.take()
                    await self._build_and_swap(["startup"], self._clock(), waiters)
                else:
                    waiters.take(self._carried)
                    await self._stop_running()
                    waiters.resolve(await self._start(target, trigger=None))
            case i.SetPaused(paused=paused):
                if paused:
                    self.scheduler.pause()
                else:
                    self.scheduler.resume()
            case i.Stop(outcome=outcome, final=final):
                self.scheduler.pause()
                self._cancel_crash_timer()
                self._closed = self._closed or final
                self._carried.resolve(False)
                await self._stop_running()
                self._set(PlatformState.STOPPED)
                _resolve(outcome, True)

    # -- build and swap -------------------------------------------------------------------------

    def _on_fire(self, paths: list[Any], first_at: float) -> None:
        """The scheduler says build: one intent, served in order with everything else."""
        self.post(i.BuildDue(tuple(paths), first_at))

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
        trigger = _shown(trigger)
        self._cancel_crash_timer()
        t_build = self._clock()
        self._set(PlatformState.BUILDING)
        log.info("build.started", trigger=trigger, mode=target.mode)
        build = asyncio.ensure_future(self._bounded_build(target))
        held: list[i.Intent] = []
        superseded = False
        while (intent := await self._next_or(build)) is not None:
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
        self._defer(held)
        try:
            result = await build
        except asyncio.CancelledError:
            reason = "superseded" if superseded else "stopped"
            log.info("build.cancelled", trigger=trigger, reason=reason)
            self._set(self._resting_state(before))
            if not superseded:
                return False
            return None
        duration = self._clock() - t_build
        self.last_build = {
            "ok": result.ok,
            "started_at": utc_iso(self._wall() - duration),
            "duration": round(duration, 4),
            "trigger": trigger,
            "error": result.error_tail,
        }
        if not result.ok:
            log.error(
                "build.failed",
                trigger=trigger,
                exit_code=result.exit_code,
                duration=round(duration, 4),
                output="\n".join(result.output),
            )
            self._set(PlatformState.BUILD_FAILED)
            self._after_failed_build()
            return False
        log.info("build.succeeded", trigger=trigger, duration=round(duration, 4))
        self._on_built(target)
        return await self._swap(target, trigger, first_at, max(0.0, t_build - first_at), duration)

    async def _bounded_build(self, target: PlatformTarget) -> BuildResult:
        """`target`'s build within `build_timeout`; past it, a failed build that says so (the
        cancellation kills the build's process tree)."""
        limit = self.build_timeout
        started = self._clock()
        try:
            async with asyncio.timeout(limit):
                return await target.build(self._on_build_line)
        except TimeoutError:
            log.error("build.timed_out", after=limit, mode=target.mode)
            reason = f"build timed out after {limit:g}s"
            return BuildResult(False, -1, self._clock() - started, (reason,))

    async def _swap(
        self,
        target: PlatformTarget,
        trigger: list[str],
        first_at: float,
        detect: float,
        build: float,
    ) -> bool:
        t_stop = self._clock()
        running = self._running
        if running is target and target.overlap_swap and target.is_running():
            # The new process starts while the old one serves on the same held sockets; the
            # old one is stopped once the new one is ready (`_start`), or keeps serving.
            target = target.fork()
            self.target = target
            self._retiring = running
        elif not _replaces_itself(running, target):
            await self._stop_running()
        t_start = self._clock()
        ok = await self._start(target, trigger=trigger)
        if ok and self._started_at is not None:
            done = self._clock()
            self.last_reload = {
                "detect": round(detect, 4),
                "build": round(build, 4),
                "stop": round(t_start - t_stop, 4),
                "start": round(self._started_at - t_start, 4),
                "ready": round(done - self._started_at, 4),
                "total": round(done - first_at, 4),
            }
            log.info("platform.reloaded", trigger=trigger, **self.last_reload)
        return ok

    def _resting_state(self, before: PlatformState) -> PlatformState:
        """Where a dropped build returns to: what ran before it, judged by what runs now."""
        alive = self._running is not None and self._running.is_running()
        if before in (PlatformState.BUILDING, PlatformState.STARTING):
            return PlatformState.RUNNING if alive else PlatformState.STOPPED
        if before in (PlatformState.RUNNING, PlatformState.BUILD_FAILED):
            return before if alive else PlatformState.STOPPED
        return before

    def _after_failed_build(self) -> None:
        """The old process may have died while the build ran: then nothing serves."""
        if self._running is not None and not self._running.is_running():
            self._crashed(None, reason="exited while building")

    # -- start, stop ----------------------------------------------------------------------------

    async def _start(self, target: PlatformTarget, *, trigger: list[str] | None) -> bool:
        self._set(PlatformState.STARTING)
        self._starts += 1
        start = self._starts
        target.set_exit_sink(_exit_poster(self, target, start))
        self._running = target
        try:
            await target.start()
        except Exception as exc:  # a start that raises is a failed start, never a dead owner
            log.error("platform.start_failed", error=str(exc), mode=target.mode)
            await self._stop_running()
            self._crashed(None, reason=str(exc))
            return False
        self._started_at = self._clock()
        log.info(
            "platform.started",
            pid=target.pid,
            container=target.container,
            mode=target.mode,
            trigger=trigger,
        )
        ready = asyncio.ensure_future(target.wait_ready())
        held: list[i.Intent] = []
        while (intent := await self._next_or(ready)) is not None:
            if isinstance(intent, _INTERRUPTING):
                ready.cancel()
            held.append(intent)
        self._defer(held)
        try:
            await ready
        except asyncio.CancelledError:
            log.info("platform.start_interrupted", pid=target.pid)
            await self._stop_running()
            self._set(PlatformState.STOPPED)
            return False
        except NotReady as exc:
            if await self._fall_back_to_retiring(target, str(exc)):
                return False
            # Alive but not serving within the timeout counts as a failed start, like an exit.
            await self._stop_running()
            self._crashed(target.exit_code, reason=str(exc))
            return False
        await self._stop_retiring()
        self._set(PlatformState.RUNNING)
        log.info(
            "platform.ready",
            pid=target.pid,
            container=target.container,
            after=round(self._clock() - self._started_at, 4),
        )
        return True

    async def _fall_back_to_retiring(self, failed: PlatformTarget, reason: str) -> bool:
        """An overlap swap whose new process did not get ready: stop it; the old one, still
        serving, stays. False when there was no overlap."""
        old = self._retiring
        if old is None or not old.is_running():
            return False
        log.error("platform.swap_failed", reason=reason, pid=failed.pid, kept=old.pid)
        await failed.stop()
        self._retiring = None
        self._running = self.target = old
        self._starts += 1  # exits of the failed twin are stale from now on
        old.set_exit_sink(_exit_poster(self, old, self._starts))
        self._started_at = self._clock()
        self._set(PlatformState.RUNNING)
        return True

    async def _stop_retiring(self) -> None:
        old, self._retiring = self._retiring, None
        if old is not None:
            await old.stop()

    async def _stop_running(self) -> None:
        await self._stop_retiring()
        running = self._running
        if running is None:
            return
        try:
            await running.stop()
        finally:
            # stop() waits until the whole tree is gone (SIGKILL at the end), so forgetting the
            # target here never loses a live process.
            self._running = None
            self._started_at = None
            self._on_state()

    # -- crashes --------------------------------------------------------------------------------

    def _on_exited(self, exited: i.Exited) -> None:
        if exited.target is not self._running or exited.start != self._starts:
            return  # a process already replaced or stopped
        if self.state in (PlatformState.RUNNING, PlatformState.BUILD_FAILED):
            self._crashed(exited.code, reason="exited")

    def _crashed(self, code: int | None, *, reason: str) -> None:
        uptime = None if self._started_at is None else round(self._clock() - self._started_at, 3)
        log.warning(
            "platform.exited", exit_code=code, reason=reason, uptime=uptime, mode=self.target.mode
        )
        self._started_at = None
        self._set(PlatformState.CRASHED)
        delay = self._budget.record_failure()
        if delay is None:
            self._set(PlatformState.CRASHLOOP)
            log.error("platform.crashloop", exits=self._budget.count)
            return
        log.info("platform.restart_scheduled", delay=delay, exits=self._budget.count)
        start = self._starts
        self._crash_timer = self._call_later(delay, lambda: self.post(i.CrashRestartDue(start)))

    def _cancel_crash_timer(self) -> None:
        if self._crash_timer is not None:
            self._crash_timer.cancel()
            self._crash_timer = None

    def _set(self, state: PlatformState) -> None:
        if state != self.state:
            self.state = transition(PLATFORM_EDGES, self.state, state)
            self._on_state()


def _shown(trigger: list[str]) -> list[str]:
    """The trigger, with at most TRIGGER_SHOWN paths named."""
    if len(trigger) <= TRIGGER_SHOWN:
        return trigger
    return [*trigger[:TRIGGER_SHOWN], f"... {len(trigger) - TRIGGER_SHOWN} more"]


def _replaces_itself(running: PlatformTarget | None, target: PlatformTarget) -> bool:
    """A compose recreate replaces the old container itself: no separate stop first."""
    return running is target and target.recreates_in_place


def _exit_poster(owner: PlatformOwner, target: PlatformTarget, start: int) -> ExitSink:
    return lambda code: owner.post(i.Exited(target, start, code))


def _resolve(outcome: i.Outcome | None, ok: bool) -> None:
    if outcome is not None and not outcome.done():
        outcome.set_result(ok)


def _answer(intent: i.Intent, ok: bool) -> None:
    outcome = getattr(intent, "outcome", None)
    _resolve(outcome, ok)
