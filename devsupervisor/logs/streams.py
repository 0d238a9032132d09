"""The in-memory streams behind `devsup logs` and `devsup events`, fed from the log pipeline.

Every structured log record passes `tap()`. Output lines of the processes devsup runs (the
platform, builds, compose calls) are named in `OUTPUT_EVENTS`, explicitly: they go to a `logs`
stream and never to the events ring, however many there are (one chatty build must not evict the
lifecycle events). Every other record goes to the `devsup` stream, and those whose event name is
a supervisor decision also to the events stream. Every ring is bounded in entries and bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from devsupervisor.logs.bounds import record_size
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
# Output lines of a supervised process (kept for the daemon's platform sink).
OUTPUT_EVENT = "platform.output"
# Every output-line record, and the `logs` stream it belongs to (None: the record's `source`).
# Never events, whatever their prefix says.
OUTPUT_EVENTS: dict[str, str | None] = {
    OUTPUT_EVENT: None,
    "build.output": "devsup",
    "compose.output": "devsup",
}

# The events ring: 1,000 events reach back over a day of edits; lifecycle events are small, so
# the byte bound only bites if something logs huge fields.
EVENTS_HISTORY = 1000
EVENTS_HISTORY_BYTES = 1024 * 1024
# Each log stream: `logs -n` defaults to 100 lines; 1,000 lines or 2 MiB serve any sane -n.
LOG_HISTORY = 1000
LOG_HISTORY_BYTES = 2 * 1024 * 1024

Stream = Broadcaster[dict[str, Any]]


def _log_stream() -> Stream:
    return Broadcaster(
        drop_marker, LOG_HISTORY, history_bytes=LOG_HISTORY_BYTES, sizeof=record_size
    )


class LogStreams:
    def __init__(self) -> None:
        self.events: Stream = Broadcaster(
            drop_marker, EVENTS_HISTORY, history_bytes=EVENTS_HISTORY_BYTES, sizeof=record_size
        )
        self.sources: dict[str, Stream] = {"devsup": _log_stream(), "platform": _log_stream()}

    def tap(self, record: dict[str, Any]) -> None:
        """Route one log record (called by the log pipeline for every record, on the loop)."""
        name = str(record.get("event", ""))
        if name in OUTPUT_EVENTS:
            stream = OUTPUT_EVENTS[name]
            if stream is not None:
                self.sources[stream].publish(record)
                return
            source = str(record.get("source", "platform"))
            line = {"ts": record.get("ts"), "source": source, "line": record.get("line", "")}
            if source not in self.sources:
                self.sources[source] = _log_stream()
            self.sources[source].publish(line)
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
