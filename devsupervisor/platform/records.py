"""Platform processes in the state file: which ones are alive now (to remember), and stopping
the ones an earlier daemon left behind (after a `kill -9` of it: never two platforms)."""

from __future__ import annotations

import signal
from collections.abc import Iterable

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.process import ProcessIdentity, stop_tree
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.statefile import PlatformRecord

log = get_logger()


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
