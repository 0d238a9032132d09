"""Running a build command: output captured line by line, cancellable, never left running.

A cancelled build (its inputs changed while it ran) is stopped as a whole tree at once: `go
build` spawns compilers and linkers that would otherwise keep the CPU busy for nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from devsupervisor.platform.process import spawn, stop_tree

# What status shows of a failed build; the log file has every line.
ERROR_TAIL_LINES = 20


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    exit_code: int
    duration: float
    output: tuple[str, ...]

    @property
    def error_tail(self) -> str | None:
        if self.ok:
            return None
        tail = self.output[-ERROR_TAIL_LINES:]
        return "\n".join(tail) if tail else f"exit code {self.exit_code}"


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
    lines: deque[str] = deque(maxlen=2000)

    def sink(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    proc, pump = await spawn(command, cwd=cwd, env=env or dict(os.environ), on_line=sink)
    try:
        code = await proc.wait()
        await pump
    except asyncio.CancelledError:
        await asyncio.shield(
            stop_tree(proc.pid, stop_signal=signal.SIGKILL, timeout=2, name="build")
        )
        await asyncio.shield(proc.wait())
        raise
    return BuildResult(code == 0, code, time.monotonic() - started, tuple(lines))
