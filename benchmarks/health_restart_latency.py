#!/usr/bin/env python3
"""Latency from Docker's `health_status: unhealthy` event to devsup's restart (target: < 1 s).

Runs the real wiring (DockerEventSource -> loop -> ServiceSupervisor -> `docker restart` through
asyncio.to_thread; `LiveSupervisor` from tests/test_health_real.py) against one demo stand-in in
a throw-away compose project, and over N trials makes it unhealthy with `POST /fail`. Per trial:
  issued: the event's own engine timestamp (timeNano) -> the restart coroutine being entered;
  engine: the same event -> the engine's `kill` event for that restart (the engine acting on it).
Prints each trial, then median and max. Usage: benchmarks/health_restart_latency.py [TRIALS]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.summary import add_row
from devsupervisor.config.model import DependenciesConfig, GiveUpConfig
from devsupervisor.logs import pipeline as logs
from tests.docker_env import (
    DEMO_STACK,
    ComposeProject,
    demo_port_env,
    remove_project,
    run,
    unique_project,
)
from tests.test_health_real import LiveSupervisor, post

SERVICE = "redpanda"
# Generous: unhealthy takes ~2 s after /fail (1 s interval, 2 retries), healthy ~1 s after restart.
TRIAL_DEADLINE = 60.0


def wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TRIAL_DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def trial(project: ComposeProject, live: LiveSupervisor) -> tuple[float, float]:
    """One incident: /fail, then (event -> restart issued, event -> engine's kill), in seconds."""
    # A fresh incident: its first restart is due at once (no backoff from the previous trial).
    live.call(lambda: live.sup.reset(SERVICE))
    n_issued, n_unhealthy = len(live.issued), len(live.unhealthy_event_times(SERVICE))
    post(project.env["DEMO_REDPANDA_PORT"], "/fail")
    wait(lambda: len(live.issued) > n_issued, "the restart")
    event_time = live.unhealthy_event_times(SERVICE)[n_unhealthy]

    def kill_times() -> list[float]:
        return [e.time for e in list(live.events) if e.action == "kill" and e.time >= event_time]

    wait(lambda: bool(kill_times()), "the engine's kill event")
    issued = live.issued[-1][2] - event_time
    engine = kill_times()[0] - event_time

    def healthy() -> bool:
        status = live.status(SERVICE)
        return bool(status["state"] == "running" and status["health"] == "healthy")

    wait(healthy, "healthy again")
    return issued, engine


def main(trials: int) -> None:
    logs.configure(None, console=None)  # the per-trial lines below are the output
    built = run([DEMO_STACK / "build-images"])
    if built.returncode != 0:
        raise SystemExit(f"build-images failed:\n{built.stderr}")
    project = ComposeProject(name=unique_project("devsup-bench"), env=demo_port_env())
    try:
        result = project.compose("up", "-d", "--wait", SERVICE)
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        deps = DependenciesConfig(give_up_after=GiveUpConfig(restarts=1000, within=300.0))
        live = LiveSupervisor(project.name, (SERVICE,), deps)
        try:
            live.reconcile()
            issued_lat: list[float] = []
            engine_lat: list[float] = []
            for n in range(1, trials + 1):
                issued, engine = trial(project, live)
                issued_lat.append(issued)
                engine_lat.append(engine)
                print(
                    f"trial {n:2d}: issued {issued * 1000:7.1f} ms   "
                    f"engine kill {engine * 1000:7.1f} ms",
                    flush=True,
                )
        finally:
            live.close()
        for name, values in (("issued", issued_lat), ("engine kill", engine_lat)):
            print(
                f"{name:12s} median {statistics.median(values) * 1000:7.1f} ms   "
                f"max {max(values) * 1000:7.1f} ms   (n={len(values)})"
            )
        add_row(
            "health_restart_latency",
            "unhealthy event -> restart issued",
            f"{statistics.median(issued_lat) * 1000:.0f} ms",
            reference=f"-> engine's kill {statistics.median(engine_lat) * 1000:.0f} ms",
            target="< 1 s",
            met=statistics.median(issued_lat) < 1.0,
        )
    finally:
        remove_project(project.name)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
