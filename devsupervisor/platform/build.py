"""Running a build command: output captured line by line (a bounded tail), cancellable, never
left running.

A cancelled build (its inputs changed while it ran) is stopped as a whole tree at once: `go
build` spawns compilers and linkers that would otherwise keep the CPU busy for nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from devsupervisor.logs.lines import OutputTail
from devsupervisor.platform.process import spawn, stop_tree
from devsupervisor.platform.shell import ShellProcess

# What status shows of a failed build (`last_build.error`); the log file has every line. 20
# lines of a compiler's complaints, and at most 8 KiB of them, so status stays small (< 64 KiB)
# whatever the build printed.
ERROR_TAIL_LINES = 20
ERROR_TAIL_BYTES = 8 * 1024
# What a result keeps of the output (`output`, logged with build.failed): the end of a long
# compiler error, bounded so that a build printing 300 MB costs 32 KiB here.
OUTPUT_TAIL_LINES = 200
OUTPUT_TAIL_BYTES = 32 * 1024


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    exit_code: int
    duration: float
    output: tuple[str, ...]  # the last lines only: OUTPUT_TAIL_LINES, OUTPUT_TAIL_BYTES

    @property
    def error_tail(self) -> str | None:
        if self.ok:
            return None
        tail = OutputTail(ERROR_TAIL_LINES, ERROR_TAIL_BYTES)
        for line in self.output[-ERROR_TAIL_LINES:]:
            tail.append(line)
        return "\n".join(tail.lines()) or f"exit code {self.exit_code}"


async def run_command(
    command: str,
    *,
    cwd: str,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BuildResult:
    """Run `command` in `cwd` to completion and report how it went.

    Raises:
        asyncio.CancelledError: re-raised after the command's whole process tree is killed.
    """
    started = time.monotonic()
    lines = OutputTail(OUTPUT_TAIL_LINES, OUTPUT_TAIL_BYTES)

    def sink(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    spawning = asyncio.ensure_future(
        spawn(command, cwd=cwd, env=env or dict(os.environ), on_line=sink)
    )
    try:
        # Shielded: a cancel that lands while the child is being spawned must still find the
        # child to kill, or the cancelled build runs on (and writes its output) unseen.
        proc, pump = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        proc, pump = await spawning
        await _kill(proc)
        raise
    try:
        code = await proc.wait()
        await pump
    except asyncio.CancelledError:
        await _kill(proc)
        raise
    return BuildResult(code == 0, code, time.monotonic() - started, lines.lines())


async def _kill(proc: ShellProcess) -> None:
    """Kill a cancelled command's whole tree at once and reap it (never interrupted)."""
    await asyncio.shield(stop_tree(proc.pid, stop_signal=signal.SIGKILL, timeout=2, name="build"))
    await asyncio.shield(proc.wait())
