"""One build of the platform as the owner runs it: bounded in time, reported in the log and as
the `last_build` of status. No state of its own: the owner decides what a result means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from devsupervisor.logs.pipeline import get_logger, utc_iso
from devsupervisor.platform.build import BuildResult
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.status_types import BuildInfo, ReloadBreakdown

log = get_logger()

# Changed paths named in a build's trigger (status, events): a checkout can change thousands.
TRIGGER_SHOWN = 20


def shown(trigger: list[str]) -> list[str]:
    """The trigger, with at most TRIGGER_SHOWN paths named."""
    if len(trigger) <= TRIGGER_SHOWN:
        return trigger
    return [*trigger[:TRIGGER_SHOWN], f"... {len(trigger) - TRIGGER_SHOWN} more"]


async def bounded_build(
    target: PlatformTarget,
    on_line: Callable[[str], None],
    *,
    timeout: float,
    clock: Callable[[], float],
) -> BuildResult:
    """`target`'s build within `timeout`; past it, a failed build that says so (the
    cancellation kills the build's process tree)."""
    started = clock()
    try:
        async with asyncio.timeout(timeout):
            return await target.build(on_line)
    except TimeoutError:
        log.error("build.timed_out", after=timeout, mode=target.mode)
        reason = f"build timed out after {timeout:g}s"
        return BuildResult(False, -1, clock() - started, (reason,))


def report(result: BuildResult, trigger: list[str], duration: float, now: float) -> BuildInfo:
    """Log how the build went and return it as status's `last_build` (`now`: wall clock)."""
    if result.ok:
        log.info("build.succeeded", trigger=trigger, duration=round(duration, 4))
    else:
        log.error(
            "build.failed",
            trigger=trigger,
            exit_code=result.exit_code,
            duration=round(duration, 4),
            output="\n".join(result.output),
        )
    return {
        "ok": result.ok,
        "started_at": utc_iso(now - duration),
        "duration": round(duration, 4),
        "trigger": trigger,
        "error": result.error_tail,
    }


def breakdown(
    first_change: float,
    build_start: float,
    stop_start: float,
    start_start: float,
    started: float,
    *,
    build: float,
    done: float,
) -> ReloadBreakdown:
    """Where a reload's time went, from the clock times of its steps (status's last_reload)."""
    return {
        "detect": round(build_start - first_change, 4),
        "build": round(build, 4),
        "stop": round(start_start - stop_start, 4),
        "start": round(started - start_start, 4),
        "ready": round(done - started, 4),
        "total": round(done - first_change, 4),
    }
