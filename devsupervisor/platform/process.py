"""Host processes: stop the whole tree, recognise a process again, adopt orphans.

(Spawning is in `shell`: every string runs as `sh -c STRING`, tagged with its tree.)

The stop sequence is a list of named steps (each logged):
  1. `snapshot`  - collect the process and all its descendants with psutil before signalling,
                   because once the parent dies its children are re-parented and lost from view;
                   plus the tree's orphans: processes carrying the tree's tag (`shell.TREE_VAR`)
                   that were re-parented to devsup, the child subreaper (a double fork,
                   `(setsid cmd &)`, leaves both the tree and the process group);
  2. `signal`    - send the stop signal to the process group and to every process found (those
                   that left the group too);
  3. `grace`     - wait up to the stop timeout for every one of them to be gone;
  4. `kill`      - SIGKILL whatever is left of the tree;
  5. `reap`      - wait until they are gone, and collect the exit status of the orphans (they
                   are devsup's children now; nobody else waits for them).
"No such process" at any step means already gone. A zombie counts as gone: PID 1 here reaps
orphans late, and a zombie holds no port and runs no code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.shell import ROOTS, TREE_VAR, spawn

__all__ = ["ProcessIdentity", "set_child_subreaper", "spawn", "stop_tree", "wait_gone"]

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


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc/PID/task/*/children (tens of microseconds; a
    psutil scan reads every process on the machine, ~4 ms, and a stop needs it twice)."""
    tasks = f"/proc/{pid}/task"
    try:
        tids = os.listdir(tasks)
    except OSError:
        return []  # gone
    pids: list[int] = []
    for tid in tids:
        try:
            with open(f"{tasks}/{tid}/children") as listing:
                pids += map(int, listing.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"{tasks}/{tid}"):
                continue  # that thread ended meanwhile
            # A kernel without CONFIG_PROC_CHILDREN: ask psutil.
            with contextlib.suppress(psutil.Error):
                return [c.pid for c in psutil.Process(pid).children()]
            return []
        except OSError:
            continue
    return pids


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def snapshot_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is already gone)."""
    try:
        tree = [psutil.Process(pid)]
    except psutil.Error:
        return []
    seen = {pid}
    frontier = [pid]
    while frontier:
        children = [c for p in frontier for c in child_pids(p) if c not in seen]
        seen.update(children)
        tree += _processes(children)
        frontier = children
    return tree


# linux/prctl.h: orphaned descendants are re-parented to the nearest subreaper, not to init.
PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> bool:
    """Make this process the child subreaper: orphans of its descendants come back to it.

    Called once at daemon start, so a platform's double-forked helper is re-parented to devsup
    (where the stop sequence finds it by its tree tag) instead of to init. Returns whether the
    kernel accepted; a failure is logged and supervision goes on without it.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        log.warning("daemon.subreaper_failed", error=os.strerror(errno))
        return False
    return True


def tree_orphans(tag: str) -> list[psutil.Process]:
    """Children of devsup that carry `tag` but were not spawned by it: re-parented orphans."""
    found = []
    for child in _processes(child_pids(os.getpid())):
        with contextlib.suppress(psutil.Error):
            if child.environ().get(TREE_VAR) == tag:
                found.append(child)
    return found


# How often a running platform's orphans that ended are collected: a zombie costs only a pid.
REAP_INTERVAL = 5.0


class OrphanReaper:
    """Collects the exit status of platform descendants re-parented to devsup that end on their
    own (as the subreaper it is their parent now, and nobody else waits for them: without this
    each one would stay a zombie for devsup's life).

    A child is adopted, i.e. reaped here, only when it is certainly such an orphan, never a child
    some other part of devsup waits for (asyncio's watcher would report 255 for one reaped under
    it): its tree tag names a root `shell.spawn` registered and it is not that root; or, once a
    zombie (whose environment is gone), its session is a registered root's and it does not lead
    it. So an orphan that left the session (`setsid`) and ended before any scan saw it alive
    stays a zombie; one seen alive is collected.
    """

    def __init__(self) -> None:
        self._adopted: set[int] = set()

    def scan(self) -> int:
        """Adopt new orphans and reap those that ended. Returns how many were reaped."""
        roots = {pid for pid in ROOTS.values() if pid is not None}
        for pid in child_pids(os.getpid()):
            if pid in self._adopted or pid in roots:
                continue
            tag = _tag_of(pid)
            if (tag is not None and ROOTS.get(tag) is not None) or (
                tag is None and (sid := _session_of(pid)) in roots and sid != pid
            ):
                self._adopted.add(pid)
        reaped = 0
        for pid in list(self._adopted):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # reaped already (by a stop's own sweep)
            if done:
                self._adopted.discard(pid)
                reaped += 1
        return reaped

    async def run_every(self, interval: float = REAP_INTERVAL) -> None:
        """Scan every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.scan()


def _tag_of(pid: int) -> str | None:
    try:
        return psutil.Process(pid).environ().get(TREE_VAR)
    except psutil.Error:
        return None  # a zombie (no environment left), gone, or not ours to read


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the parenthesised name: state ppid pgrp session ...
            return int(stat.read().rpartition(")")[2].split()[3])
    except (OSError, ValueError, IndexError):
        return None


# The daemon's one reaper (its adopted set is the daemon's).
ORPHAN_REAPER = OrphanReaper()


def _reap(procs: Iterable[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)


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
    tag: str | None = None,
    leader_gone: bool = False,
    name: str = "process",
) -> StopReport:
    """Stop a process and its whole tree, following the steps in the module docstring.

    Args:
        pgid: the group to signal (the spawned session's, which outlives its leader); by
            default `pid`'s own group when it leads one.
        tag: the tree's tag, to find its orphans re-parented to devsup.
        leader_gone: `pid` has exited and been reaped (its number may be reused): only its
            group and its orphans are left to stop.
    """
    started = time.monotonic()
    procs = [] if leader_gone else await asyncio.to_thread(snapshot_tree, pid)
    orphans = await asyncio.to_thread(tree_orphans, tag) if tag is not None else []
    known = {p.pid for p in procs}
    procs += [o for o in orphans if o.pid not in known]
    pids = tuple(p.pid for p in procs)
    log.debug("process.stop.snapshot", name=name, pid=pid, tree=list(pids))
    if not procs:
        if pgid is not None:
            # The leader is gone; members of its group may not be (killpg reaches them).
            _signal_all((), pgid, signal.SIGKILL)
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
    # Descendants that outlived their parent were re-parented to devsup and are its zombies
    # now; `pid` itself is reaped by whoever spawned it.
    _reap(p for p in procs if p.pid != pid)
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
