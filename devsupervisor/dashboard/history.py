"""What the dashboard remembers beyond the status object, derived from the event stream alone:
the last reloads (for the chart) and the timeline of the last daemon start or stack switch.

Fed one event record at a time (`feed`), on the loop. Nothing here asks the daemon anything, so
the core needs no history of its own; the events' `ts` fields are the clock.

Timeline rows follow the contract's order of things: services come up first (healthy where they have
a healthcheck), then the platform builds and starts. A service with no healthcheck never reports
`service.healthy`; it is counted as up when the platform's turn begins.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

# The chart shows the last 50 reloads.
MAX_RELOADS = 50
# Phases of a reload, in the order they happen and are stacked.
PHASES = ("detect", "build", "stop", "start", "ready")
# A start or switch has a handful of services; this only bounds a pathological config.
MAX_ROWS = 100

Record = dict[str, Any]


def _seconds(ts: object) -> float | None:
    """An event's ISO 8601 `ts` as POSIX seconds, or None when missing or malformed."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


class Timeline:
    """One daemon start or stack switch: a row per service and one for the platform."""

    def __init__(self, kind: str, stack: str | None, ts: str, at: float) -> None:
        self.kind = kind
        self.stack = stack
        self.started_at = ts
        self._t0 = at
        self.finished: float | None = None
        self.ok: bool | None = None
        # name -> list of segments {phase, start, end, ok}; insertion order is display order.
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def _offset(self, at: float) -> float:
        return round(max(0.0, at - self._t0), 3)

    def open(self, row: str, phase: str, at: float) -> None:
        if row not in self.rows and len(self.rows) >= MAX_ROWS:
            return
        segments = self.rows.setdefault(row, [])
        segments.append({"phase": phase, "start": self._offset(at), "end": None, "ok": None})

    def close(
        self, row: str, phase: str, at: float, *, ok: bool, as_phase: str | None = None
    ) -> None:
        for segment in reversed(self.rows.get(row, [])):
            if segment["phase"] == phase and segment["end"] is None:
                segment["end"] = self._offset(at)
                segment["ok"] = ok
                if as_phase is not None:
                    segment["phase"] = as_phase
                return

    def close_services(self, at: float) -> None:
        """The platform's turn began: every service still coming up is up (no healthcheck)."""
        for name in self.rows:
            if name != "platform":
                self.close(name, "starting", at, ok=True, as_phase="up")

    def finish(self, at: float, ok: bool) -> None:
        self.finished = self._offset(at)
        self.ok = ok

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stack": self.stack,
            "started_at": self.started_at,
            "duration": self.finished,
            "ok": self.ok,
            "rows": [
                {"name": name, "segments": [dict(s) for s in segments]}
                for name, segments in self.rows.items()
            ],
        }


class History:
    """The reload history and the last start/switch timeline; `version` counts changes."""

    def __init__(self, max_reloads: int = MAX_RELOADS) -> None:
        self.reloads: deque[dict[str, Any]] = deque(maxlen=max_reloads)
        self.timeline: Timeline | None = None
        self.version = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "reloads": list(self.reloads),
            "timeline": self.timeline.snapshot() if self.timeline is not None else None,
            "phases": list(PHASES),
        }

    def feed(self, record: Record) -> bool:
        """Take one event record; True when the snapshot changed."""
        name = str(record.get("event", ""))
        at = _seconds(record.get("ts"))
        if at is None:
            return False
        changed = self._feed(name, record, at)
        if changed:
            self.version += 1
        return changed

    def _feed(self, name: str, record: Record, at: float) -> bool:
        if name == "platform.reloaded":
            entry = {"ts": record["ts"], "trigger": list(record.get("trigger") or [])[:5]}
            for phase in (*PHASES, "total"):
                value = record.get(phase)
                entry[phase] = float(value) if isinstance(value, int | float) else 0.0
            self.reloads.append(entry)
            return True
        if name in ("daemon.started", "stack.switching"):
            kind = "start" if name == "daemon.started" else "switch"
            self.timeline = Timeline(kind, record.get("stack"), str(record["ts"]), at)
            return True
        timeline = self.timeline
        if timeline is None or timeline.finished is not None:
            return False
        return self._feed_timeline(timeline, name, record, at)

    def _feed_timeline(self, timeline: Timeline, name: str, record: Record, at: float) -> bool:
        match name:
            case "stack.starting":
                for service in record.get("services") or []:
                    timeline.open(str(service), "starting", at)
            case "service.healthy":
                timeline.close(
                    str(record.get("service")), "starting", at, ok=True, as_phase="healthy"
                )
            case "build.started":
                timeline.close_services(at)
                timeline.open("platform", "build", at)
            case "build.succeeded" | "build.failed":
                timeline.close("platform", "build", at, ok=name == "build.succeeded")
            case "platform.started":
                timeline.close_services(at)
                timeline.open("platform", "start", at)
            case "platform.ready":
                timeline.close("platform", "start", at, ok=True, as_phase="ready")
            case "platform.exited" | "platform.crashloop":
                timeline.close("platform", "start", at, ok=False)
            case "stack.switched":
                timeline.finish(at, bool(record.get("ok", True)))
            case "daemon.ready" if timeline.kind == "start":
                timeline.finish(at, bool(record.get("ok", True)))
            case "stack.failed":
                timeline.finish(at, False)
            case _:
                return False
        return True
