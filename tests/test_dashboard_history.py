"""The dashboard's history keeper: reload chart data and the start/switch timeline from events."""

from __future__ import annotations

from typing import Any

from devsupervisor.dashboard.history import History


def ev(second: float, name: str, **fields: Any) -> dict[str, Any]:
    return {"ts": f"2026-01-01T00:00:{second:06.3f}Z", "event": name, "level": "info", **fields}


def reloaded(second: float, total: float) -> dict[str, Any]:
    phases = {"detect": 0.1, "build": 0.2, "stop": 0.05, "start": 0.05, "ready": 0.1}
    return ev(second, "platform.reloaded", trigger=["main.go"], total=total, **phases)


def test_keeps_the_last_fifty_reloads() -> None:
    """Every platform.reloaded is a chart bar; only the last 50 are kept."""
    history = History()
    for i in range(60):
        assert history.feed(reloaded(i % 60, total=float(i)))
    reloads = history.snapshot()["reloads"]
    assert len(reloads) == 50
    assert reloads[0]["total"] == 10.0
    assert reloads[-1]["trigger"] == ["main.go"]
    assert history.version == 60


def test_start_timeline_services_then_platform() -> None:
    """A daemon start: services from started to healthy (or up), then build and ready."""
    history = History()
    for record in (
        ev(0, "daemon.started", stack="skeleton"),
        ev(1, "stack.starting", stack="skeleton", services=["postgres", "traefik"]),
        ev(3, "service.healthy", service="postgres"),
        ev(3.5, "build.started", trigger=["start"]),
        ev(5, "build.succeeded", duration=1.5),
        ev(5.1, "platform.started", pid=7),
        ev(5.6, "platform.ready", pid=7),
        ev(5.7, "daemon.ready", ok=True),
        ev(9, "build.started", trigger=["later"]),  # after the start: not part of it
    ):
        history.feed(record)
    timeline = history.snapshot()["timeline"]
    assert timeline["kind"] == "start"
    assert timeline["duration"] == 5.7
    assert timeline["ok"] is True
    rows = {row["name"]: row["segments"] for row in timeline["rows"]}
    assert list(rows) == ["postgres", "traefik", "platform"]
    assert rows["postgres"] == [{"phase": "healthy", "start": 1.0, "end": 3.0, "ok": True}]
    assert rows["traefik"] == [{"phase": "up", "start": 1.0, "end": 3.5, "ok": True}]
    assert [(s["phase"], s["start"], s["end"]) for s in rows["platform"]] == [
        ("build", 3.5, 5.0),
        ("ready", 5.1, 5.6),
    ]


def test_switch_replaces_the_timeline_and_marks_a_failed_build() -> None:
    """A switch starts a new timeline; a failed build shows as a failed segment."""
    history = History()
    history.feed(ev(0, "daemon.started", stack="skeleton"))
    history.feed(ev(10, "stack.switching", stack="fullstack", previous="skeleton"))
    history.feed(ev(11, "build.started"))
    history.feed(ev(12, "build.failed", exit_code=1))
    history.feed(ev(12.5, "stack.switched", stack="fullstack", ok=False))
    timeline = history.snapshot()["timeline"]
    assert (timeline["kind"], timeline["stack"], timeline["ok"]) == ("switch", "fullstack", False)
    assert timeline["rows"] == [
        {
            "name": "platform",
            "segments": [{"phase": "build", "start": 1.0, "end": 2.0, "ok": False}],
        }
    ]


def test_ignores_records_without_a_time() -> None:
    """A record with no readable ts changes nothing."""
    history = History()
    assert not history.feed({"event": "platform.reloaded"})
    assert not history.feed({"event": "daemon.started", "ts": "yesterday"})
    assert history.version == 0
