"""The in-memory streams behind `devsup logs` and `devsup events`, fed from the log pipeline.

Every structured log record passes `tap()`: platform output lines go to the `platform` stream
(other output sources get a stream of their own), everything else to the `devsup` stream, and
records whose event name is a supervisor decision also to the events stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from devsupervisor.logs.broadcast import Broadcaster, drop_marker

# Event names that `devsup events` streams: the supervisor's decisions, not its chatter.
EVENT_PREFIXES = (
    "change.",
    "build.",
    "platform.",
    "service.",
    "stack.",
    "config.",
    "docker.",
    "daemon.",
)
# Output lines of a supervised process: a log stream of their own, not an event.
OUTPUT_EVENT = "platform.output"

Stream = Broadcaster[dict[str, Any]]


class LogStreams:
    def __init__(self) -> None:
        self.events: Stream = Broadcaster(drop_marker)
        self.sources: dict[str, Stream] = {
            "devsup": Broadcaster(drop_marker),
            "platform": Broadcaster(drop_marker),
        }

    def tap(self, record: dict[str, Any]) -> None:
        """Route one log record (called by the log pipeline for every record, on the loop)."""
        name = str(record.get("event", ""))
        if name == OUTPUT_EVENT:
            source = str(record.get("source", "platform"))
            line = {"ts": record.get("ts"), "source": source, "line": record.get("line", "")}
            self.sources.setdefault(source, Broadcaster(drop_marker)).publish(line)
            return
        self.sources["devsup"].publish(record)
        if name.startswith(EVENT_PREFIXES):
            self.events.publish(record)

    def read(self, name: str, lines: int, *, follow: bool) -> Any:
        """Recent items of stream `name` (KeyError if none), or a live follower."""
        stream = self.sources[name]
        return follow_stream(stream, backlog=lines) if follow else stream.recent(lines)


async def follow_stream(stream: Stream, backlog: int) -> AsyncIterator[dict[str, Any]]:
    """`backlog` recent items, then live ones, until the client leaves."""
    async with stream.subscribe(backlog=backlog) as sub:
        async for item in sub:
            yield item
