"""Platform processes in the state file: which ones are alive now (to remember), and stopping
the ones an earlier daemon left behind (after a `kill -9` of it: never two platforms).

The state file names a platform only once it has been saved after the spawn; a daemon killed in
between (or while a build runs) leaves processes no record names. Every process a daemon starts
inherits INSTANCE_VAR, so those are found too: with the instance's lock held, a process carrying
our instance that is not ours is an earlier daemon's leftover.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable

import psutil

from devsupervisor.config.model import BinaryConfig
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.process import ProcessIdentity, stop_tree
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.statefile import PlatformRecord

log = get_logger()

# Set in the daemon's own environment, so every platform, build and compose call inherits it.
INSTANCE_VAR = "DEVSUP_INSTANCE"


def live_records(targets: Iterable[PlatformTarget]) -> list[PlatformRecord]:
    """A record per live host process among `targets` (containers are found by compose)."""
    idents = [target.identity() for target in targets]
    return [PlatformRecord(i.pid, i.create_time) for i in idents if i is not None]


async def stop_leftovers(
    records: Iterable[PlatformRecord], *, stop_signal: signal.Signals, timeout: float
) -> None:
    """Stop every recorded process that still runs. The start time tells a recycled pid from
    ours: a process that is not ours is never touched."""
    for record in records:
        if ProcessIdentity(record.pid, record.create_time).process() is None:
            continue  # gone, or the pid now belongs to someone else
        log.warning("platform.orphan_found", pid=record.pid, action="stopping it first")
        await stop_tree(
            record.pid, stop_signal=stop_signal, timeout=timeout, name="previous-platform"
        )


def instance_leftovers(instance: str) -> list[psutil.Process]:
    """The top processes (their trees go with them) carrying `instance` in INSTANCE_VAR that
    are not this daemon or one of its ancestors. Call only with the instance's lock held."""
    me = psutil.Process()
    own = {me.pid, *(p.pid for p in me.parents())}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid in own:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(INSTANCE_VAR) == instance and proc.status() != "zombie":
                found[proc.pid] = proc
    tops = []
    for proc in found.values():
        with contextlib.suppress(psutil.Error):
            if proc.ppid() not in found:
                tops.append(proc)
    return tops


async def stop_instance_leftovers(
    instance: str, *, stop_signal: signal.Signals, timeout: float
) -> None:
    """Stop what an earlier daemon of `instance` left running that no record named."""
    tops = await asyncio.to_thread(instance_leftovers, instance)
    for proc in tops:
        with contextlib.suppress(psutil.Error):
            log.warning(
                "platform.orphan_found",
                pid=proc.pid,
                command=" ".join(proc.cmdline())[:200],
                action="stopping it first",
            )
    await asyncio.gather(
        *(
            stop_tree(p.pid, stop_signal=stop_signal, timeout=timeout, name="previous-daemon-child")
            for p in tops
        )
    )


def mark_instance(instance: str) -> None:
    """Put `instance` in this process's environment, for every child to inherit."""
    os.environ[INSTANCE_VAR] = instance


async def stop_previous(
    records: Iterable[PlatformRecord], instance: str, binary: BinaryConfig | None
) -> None:
    """Everything an earlier daemon of `instance` left running: the platforms it recorded, then
    what no record names (a platform spawned just before the kill, a build, a compose call)."""
    stop_signal = binary.stop_signal if binary else signal.SIGTERM
    timeout = binary.stop_timeout if binary else 5.0
    await stop_leftovers(records, stop_signal=stop_signal, timeout=timeout)
    await stop_instance_leftovers(instance, stop_signal=stop_signal, timeout=timeout)
