"""Host processes: start in a new session, stop the whole tree, recognise a process again.

The stop sequence is a list of named steps (each logged):
  1. `snapshot`  - collect the process and all its descendants with psutil before signalling,
                   because once the parent dies its children are re-parented and lost from view;
  2. `signal`    - send the stop signal to the process group and to any descendant that left it
                   (a launcher that calls setsid);
  3. `grace`     - wait up to the stop timeout for every one of them to be gone;
  4. `kill`      - SIGKILL whatever is left of the tree;
  5. `reap`      - wait until they are gone.
"No such process" at any step means already gone. A zombie counts as gone: PID 1 here reaps
orphans late, and a zombie holds no port and runs no code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from devsupervisor.logs.pipeline import get_logger

log = get_logger()

# Short first polls make a quick exit (the usual case on SIGTERM) cost milliseconds, not a tick.
POLL_FIRST = 0.001
POLL_MAX = 0.05
# Gentle growth: a SIGTERM'd Go server exits in 3-5 ms; doubling would notice it at 6 or 14.
POLL_GROWTH = 1.5


@dataclass(frozen=True)
class ProcessIdentity:
    """A pid plus its start time: a recycled pid never matches a stale identity."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def process(self) -> psutil.Process | None:
        """The live process this identity names, or None when it is gone or the pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


def _is_gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def snapshot_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is already gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _signal_all(procs: Iterable[psutil.Process], pgid: int | None, sig: int) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


async def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process is gone or `timeout` passes; return those still alive."""
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    alive = procs
    while True:
        alive = [p for p in alive if not _is_gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * POLL_GROWTH, POLL_MAX)


@dataclass(frozen=True)
class StopReport:
    pids: tuple[int, ...]
    killed: tuple[int, ...]
    duration: float


async def stop_tree(
    pid: int,
    *,
    stop_signal: int = signal.SIGTERM,
    timeout: float = 5.0,
    pgid: int | None = None,
    name: str = "process",
) -> StopReport:
    """Stop a process and its whole tree, following the steps in the module docstring."""
    started = time.monotonic()
    procs = await asyncio.to_thread(snapshot_tree, pid)
    pids = tuple(p.pid for p in procs)
    log.debug("process.stop.snapshot", name=name, pid=pid, tree=list(pids))
    if not procs:
        return StopReport((), (), 0.0)
    group = pgid if pgid is not None else _own_group(pid)
    _signal_all(procs, group, stop_signal)
    log.debug("process.stop.signal", name=name, pid=pid, pgid=group, signal=stop_signal)
    alive = await wait_gone(procs, timeout)
    killed: tuple[int, ...] = ()
    if alive:
        killed = tuple(p.pid for p in alive)
        log.warning("process.stop.kill", name=name, pid=pid, pids=list(killed), after=timeout)
        _signal_all(alive, group, signal.SIGKILL)
        still = await wait_gone(alive, 5.0)
        if still:
            log.error("process.stop.stuck", name=name, pids=[p.pid for p in still])
    report = StopReport(pids, killed, time.monotonic() - started)
    log.debug("process.stop.done", name=name, pid=pid, duration=round(report.duration, 4))
    return report


def _own_group(pid: int) -> int | None:
    """The process group to signal, but only when `pid` leads it (never our own group)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return pgid if pgid == pid and pgid != os.getpgid(0) else None


LineSink = Callable[[str], None]


async def spawn(
    command: str,
    *,
    cwd: str,
    env: dict[str, str],
    on_line: LineSink,
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    """Start `command` through /bin/sh in a new session, streaming its output line by line.

    A new session makes the child lead its own process group, so the stop sequence can signal
    the whole group without touching devsup itself. Returns the process and the task that
    pumps its output (done at EOF).
    """
    proc = await asyncio.create_subprocess_shell(
        shell_command(command),
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    pump = asyncio.get_running_loop().create_task(pump_lines(proc.stdout, on_line))
    return proc, pump


# Characters that make a command more than one simple command; those keep their shell.
_COMPOUND = set(";&|()<>`\n")


def shell_command(command: str) -> str:
    """`exec` a simple command so the pid devsup reports is the program, not a waiting shell."""
    first = command.split(maxsplit=1)[0] if command.strip() else ""
    # `VAR=x cmd` cannot follow exec; such commands keep their shell too.
    if any(ch in _COMPOUND for ch in command) or "=" in first:
        return command
    return f"exec {command}"


async def pump_lines(stream: asyncio.StreamReader, on_line: LineSink) -> None:
    """Hand each output line to `on_line` until EOF; over-long lines are split, never lost."""
    while True:
        try:
            raw = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as eof:
            raw = eof.partial
            if raw:
                on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            return
        except asyncio.LimitOverrunError as over:
            raw = await stream.readexactly(over.consumed)
        on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
