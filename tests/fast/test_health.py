"""Fast tier: scripted Docker event histories through ServiceSupervisor with a fake clock.

The supervisor runs on a real asyncio loop (its restarts are tasks); time, timers and the restart
itself are the injected seams. Event orders are the ones the engine reports (see health.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from devsupervisor.config.model import BackoffConfig, DependenciesConfig, GiveUpConfig
from devsupervisor.stack.docker_events import ContainerEvent, ContainerInfo
from devsupervisor.stack.health import ServiceSupervisor

CID = "c0ffee" * 10 + "abcd"
CID2 = "beef" * 16
T0 = 1000.0
WALL0 = 1_700_000_000.0


@dataclass
class _Timer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Harness:
    """One supervisor on a private loop; fake time; restarts recorded (and optionally failed)."""

    def __init__(self, deps: DependenciesConfig, services: tuple[str, ...]) -> None:
        self.loop = asyncio.new_event_loop()
        self.now = T0
        self.timers: list[_Timer] = []
        self.restarts: list[tuple[str, str, float]] = []
        self.restarted: list[str] = []
        self.fail_restarts = False
        self.sup = ServiceSupervisor(
            deps,
            restart=self._restart,
            on_restarted=self.restarted.append,
            clock=lambda: self.now,
            wall_clock=lambda: WALL0 + self.now,
            call_later=self._call_later,
        )
        self.sup.set_services(services)

    async def _restart(self, service: str, reason: str) -> None:
        self.restarts.append((service, reason, self.now))
        if self.fail_restarts:
            raise RuntimeError("engine said no")

    def _call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the running loop, then let the restart tasks it spawned finish."""

        async def body() -> Any:
            result = fn()
            for _ in range(5):
                await asyncio.sleep(0)
            return result

        return self.loop.run_until_complete(body())

    def event(self, action: str, service: str = "postgres", cid: str = CID, **kw: Any) -> None:
        ev = ContainerEvent(action=action, container_id=cid, service=service, time=self.now, **kw)
        self._on_loop(lambda: self.sup.handle(ev))

    def up(self, service: str = "postgres", cid: str = CID) -> None:
        """The container starts and passes its healthcheck."""
        self.event("start", service, cid)
        self.event("health_status", service, cid, health="healthy")

    def advance(self, seconds: float) -> None:
        """Move fake time on, firing due timers in order."""
        target = self.now + seconds
        while True:
            due = sorted(
                (t for t in self.timers if not t.cancelled and t.due <= target), key=lambda t: t.due
            )
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = timer.due
            self._on_loop(timer.callback)
        self.now = target

    def call(self, fn: Callable[[], Any]) -> Any:
        return self._on_loop(fn)

    def state(self, service: str = "postgres") -> dict[str, Any]:
        return next(s for s in self.sup.status() if s["name"] == service)

    def own_restart(self, service: str = "postgres", cid: str = CID) -> None:
        """The events Docker reports for the restart devsup just issued."""
        self.event("kill", service, cid, signal="15")
        self.event("die", service, cid, exit_code=0)
        self.event("stop", service, cid)
        self.event("start", service, cid)
        self.event("restart", service, cid)

    def close(self) -> None:
        self.loop.close()


DEPS = DependenciesConfig(
    restart_unhealthy=True,
    backoff=BackoffConfig(initial=1.0, max=3.0),
    give_up_after=GiveUpConfig(restarts=3, within=60.0),
)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(DEPS, ("postgres", "redpanda"))
    try:
        yield harness
    finally:
        harness.close()


def test_unhealthy_restarts_at_once(h: Harness) -> None:
    """An unhealthy service is restarted at the moment of the event, with no delay."""
    h.up()
    with capture_logs() as logs:
        h.event("health_status", health="unhealthy")
    assert h.restarts == [("postgres", "unhealthy", T0)]
    assert h.restarted == ["postgres"]
    names = [r["event"] for r in logs]
    assert names == ["service.unhealthy", "service.restarted"]
    assert (logs[1]["attempt"], logs[1]["delay"]) == (1, 0.0)
    assert h.state()["state"] == "restarting"
    assert h.state()["restarts"] == 1


def test_own_restart_events_end_healthy(h: Harness) -> None:
    """The kill/die/stop of devsup's own restart are not a stop on purpose; healthy is running."""
    h.up()
    h.event("health_status", health="unhealthy")
    h.own_restart()
    assert h.state()["state"] == "starting"
    h.event("health_status", health="healthy")
    status = h.state()
    assert (status["state"], status["health"], status["restarts"]) == ("running", "healthy", 1)
    assert status["reason"] == "restarted: unhealthy"
    h.event("die", exit_code=2)
    h.advance(DEPS.backoff.initial)
    assert len(h.restarts) == 2, "a later crash is still restarted (after its backoff)"


def test_kill_then_die_is_stopped_on_purpose(h: Harness) -> None:
    """`docker stop` (kill, die, stop) leaves the service stopped and not restarted."""
    h.up()
    with capture_logs() as logs:
        h.event("kill", signal="15")
        h.event("die", exit_code=0)
        h.event("stop")
    assert h.restarts == []
    assert h.state()["state"] == "stopped"
    assert [r["event"] for r in logs] == ["service.stopped"]


def test_docker_kill_is_stopped_on_purpose(h: Harness) -> None:
    """`docker kill` (kill SIGKILL, die 137, no stop event) is a stop on purpose too."""
    h.up()
    h.event("kill", signal="9")
    h.event("die", exit_code=137)
    assert h.restarts == []
    assert h.state()["state"] == "stopped"


@pytest.mark.parametrize(
    "order",
    [("kill", "die", "unhealthy"), ("kill", "unhealthy", "die")],
    ids=["unhealthy-after-die", "unhealthy-between"],
)
def test_unhealthy_after_manual_kill_is_ignored(h: Harness, order: tuple[str, ...]) -> None:
    """An unhealthy report that follows a manual kill never leads to a restart."""
    h.up()
    for step in order:
        if step == "kill":
            h.event("kill", signal="15")
        elif step == "die":
            h.event("die", exit_code=0)
        else:
            h.event("health_status", health="unhealthy")
    assert h.restarts == []
    assert h.state()["state"] == "stopped"


def test_crash_without_kill_is_restarted(h: Harness) -> None:
    """A die with a non-zero exit and no kill before it is a crash: started again at once."""
    h.up()
    with capture_logs() as logs:
        h.event("die", exit_code=1)
    assert h.restarts == [("postgres", "exited with code 1", T0)]
    assert [r["event"] for r in logs] == ["service.exited", "service.restarted"]


def test_oom_kill_is_restarted(h: Harness) -> None:
    """The OOM killer's oom then die (137, no kill event) is a crash, with reason out of memory."""
    h.up()
    h.event("oom")
    h.event("die", exit_code=137)
    assert h.restarts == [("postgres", "killed: out of memory", T0)]


def test_clean_exit_is_not_restarted(h: Harness) -> None:
    """A service exiting 0 by itself finished its job: shown exited, not restarted."""
    h.up()
    h.event("die", exit_code=0)
    assert h.restarts == []
    assert (h.state()["state"], h.state()["reason"]) == ("exited", "exited with code 0")


def test_slow_starter_is_never_restarted(h: Harness) -> None:
    """A container in its start period (health starting) is left alone however long it takes."""
    h.event("start")
    h.event("health_status", health="healthy")
    h.event("health_status", health="starting")
    h.advance(600)
    assert h.restarts == []
    assert (h.state()["state"], h.state()["health"]) == ("starting", "starting")


def test_backoff_doubles_and_caps() -> None:
    """Restarts within the window wait initial, doubled each time, capped at max."""
    deps = DependenciesConfig(
        backoff=BackoffConfig(initial=1.0, max=3.0),
        give_up_after=GiveUpConfig(restarts=10, within=600.0),
    )
    h = Harness(deps, ("postgres",))
    delays: list[float] = []
    for _ in range(5):
        h.up()
        before = h.now
        h.event("health_status", health="unhealthy")
        if len(h.restarts) <= len(delays):
            pending = [t for t in h.timers if not t.cancelled]
            assert len(pending) == 1 and h.state()["state"] == "restarting"
            h.advance(pending[0].due - h.now - 0.01)
            assert len(h.restarts) == len(delays), "not before its delay"
            h.advance(0.01)
        delays.append(h.restarts[-1][2] - before)
        h.own_restart()
        h.advance(5)
    h.close()
    assert delays == [0.0, 1.0, 2.0, 3.0, 3.0]


def test_gives_up_after_too_many_restarts(h: Harness) -> None:
    """More restarts than give_up_after.restarts within the window: gave_up, no more restarts."""
    for _ in range(3):
        h.up()
        h.event("health_status", health="unhealthy")
        h.advance(5)
        h.own_restart()
    assert len(h.restarts) == 3
    h.up()
    with capture_logs() as logs:
        h.event("health_status", health="unhealthy")
    assert [r["event"] for r in logs] == ["service.unhealthy", "service.gave_up"]
    assert logs[1]["restarts"] == 3 and logs[1]["window"] == 60.0
    assert h.state()["state"] == "gave_up"
    h.event("die", exit_code=1)
    h.event("start")
    h.event("health_status", health="unhealthy")
    h.advance(120)
    assert len(h.restarts) == 3
    assert h.state()["state"] == "gave_up"


def test_restarts_outside_window_do_not_add_up(h: Harness) -> None:
    """Restarts spread wider than the window never give up, and each is immediate again."""
    for _ in range(6):
        h.up()
        h.event("health_status", health="unhealthy")
        h.own_restart()
        h.advance(61)
    assert [r[2] for r in h.restarts] == [T0 + 61 * i for i in range(6)]


def test_reset_leaves_gave_up_and_restarts_if_still_unhealthy(h: Harness) -> None:
    """reset() (devsup restart NAME, a switch) clears gave_up and acts on the current health."""
    for _ in range(4):
        h.up()
        h.event("health_status", health="unhealthy")
        h.advance(5)
        h.own_restart()
    h.up()
    h.event("health_status", health="unhealthy")
    assert h.state()["state"] == "gave_up"
    count = len(h.restarts)
    h.call(lambda: h.sup.reset("postgres"))
    assert len(h.restarts) == count + 1, "restarted at once: the window is forgotten"
    assert h.state()["state"] == "restarting"


def test_restart_now_resets_and_restarts(h: Harness) -> None:
    """restart_now (devsup restart NAME) restarts even a gave_up service and notifies."""
    for _ in range(4):
        h.up()
        h.event("die", exit_code=1)
        h.advance(5)
    assert h.state()["state"] == "gave_up"
    h.loop.run_until_complete(h.sup.restart_now("postgres"))
    assert h.restarts[-1][:2] == ("postgres", "requested")
    assert h.restarted[-1] == "postgres"
    h.own_restart()
    h.event("health_status", health="healthy")
    assert h.state()["state"] == "running"


def test_start_after_manual_stop_clears_the_mark(h: Harness) -> None:
    """A manual stop is undone by a later start: a crash after that is restarted."""
    h.up()
    h.event("kill", signal="15")
    h.event("die", exit_code=0)
    h.event("stop")
    h.advance(300)
    h.up()
    assert h.state()["state"] == "running"
    h.event("die", exit_code=1)
    assert len(h.restarts) == 1


def test_stop_event_alone_marks_stopped(h: Harness) -> None:
    """A stop whose kill came longer ago than KILL_WINDOW (long grace period) is still a stop."""
    h.up()
    h.event("kill", signal="15")
    h.advance(500)
    h.event("die", exit_code=0)
    h.event("stop")
    assert h.state()["state"] == "stopped"
    h.event("health_status", health="unhealthy")
    assert h.restarts == []


def test_one_restart_in_flight(h: Harness) -> None:
    """Events while a restart waits or runs do not issue a second one."""
    h.up()
    h.event("die", exit_code=1)
    h.event("health_status", health="unhealthy")
    h.event("die", exit_code=1)
    assert len(h.restarts) == 1


def test_restart_unhealthy_off_only_reports() -> None:
    """With restart_unhealthy false an unhealthy service is reported, not restarted."""
    h = Harness(DependenciesConfig(restart_unhealthy=False), ("postgres",))
    h.up()
    with capture_logs() as logs:
        h.event("health_status", health="unhealthy")
    h.close()
    assert h.restarts == []
    assert [r["event"] for r in logs] == ["service.unhealthy"]


def test_failed_restart_is_retried_with_backoff_then_gives_up(h: Harness) -> None:
    """A restart that raises is logged and retried after backoff, bounded by give-up."""
    h.fail_restarts = True
    h.up()
    with capture_logs() as logs:
        h.event("health_status", health="unhealthy")
        h.advance(30)
    assert [r[2] - T0 for r in h.restarts] == [0.0, 1.0, 3.0]
    assert [r["event"] for r in logs].count("service.restart_failed") == 3
    assert h.state()["state"] == "gave_up"


def test_events_of_other_services_and_old_containers_are_ignored(h: Harness) -> None:
    """Services outside the chosen stack, and a replaced container winding down, change nothing."""
    h.up()
    h.event("die", service="emqx", exit_code=1)
    h.event("create", cid=CID2)
    h.event("die", cid=CID, exit_code=1)
    assert h.restarts == []
    h.event("start", cid=CID2)
    assert h.state()["container"] == CID2[:12]


def test_docker_lost_cancels_pending_and_reconcile_resumes(h: Harness) -> None:
    """While the engine is gone nothing is restarted; reconcile afterwards acts on what it finds."""
    h.up()
    h.event("die", exit_code=1)
    h.own_restart()
    h.event("die", exit_code=1)
    assert [t for t in h.timers if not t.cancelled], "second restart waits for its backoff"
    h.call(h.sup.docker_lost)
    h.advance(10)
    assert len(h.restarts) == 1
    listing = [
        ContainerInfo("postgres", CID, "p-postgres-1", "running", "unhealthy", None, "x"),
        ContainerInfo("redpanda", CID2, "p-redpanda-1", "exited", "none", 1, "x"),
    ]
    down = h.call(lambda: h.sup.reconcile(listing))
    assert down == ["redpanda"]
    # The crash whose restart the engine loss cancelled still counts: third failure, 2x initial.
    h.advance(DEPS.backoff.initial * 2 - 0.01)
    assert len(h.restarts) == 1
    h.advance(0.01)
    assert h.restarts[-1][:2] == ("postgres", "unhealthy")
    assert len(h.restarts) == 2


def test_reconcile_keeps_manual_stops_stopped(h: Harness) -> None:
    """After docker.back, a service stopped on purpose is not among those to bring up."""
    h.up()
    h.up("redpanda", CID2)
    h.event("kill", signal="15")
    h.event("die", exit_code=0)
    h.advance(60)
    listing = [ContainerInfo("postgres", CID, "p-postgres-1", "exited", "none", 0, "x")]
    down = h.call(lambda: h.sup.reconcile(listing))
    assert down == ["redpanda"], "no container for redpanda: it must be brought up"
    assert h.state()["state"] == "stopped"


def test_status_shape(h: Harness) -> None:
    """status() gives the status object's service entries: short id, ISO UTC since, reason."""
    h.advance(1.5)
    h.up()
    entry = h.state()
    assert set(entry) == {"name", "state", "health", "restarts", "container", "since", "reason"}
    assert entry["container"] == CID[:12]
    assert entry["since"] == "2023-11-14T22:30:01.500Z"
    assert (entry["state"], entry["health"], entry["restarts"]) == ("running", "healthy", 0)
    assert [s["name"] for s in h.sup.status()] == ["postgres", "redpanda"]


def test_stops_just_before_engine_loss_are_not_kept(h: Harness) -> None:
    """Stops just before docker.lost may be the engine shutting down: reconcile brings them up."""
    h.up()
    h.up("redpanda", CID2)
    h.event("kill", signal="15")
    h.event("die", exit_code=0)
    h.advance(60)
    h.event("kill", "redpanda", CID2, signal="15")
    h.event("die", "redpanda", CID2, exit_code=0)
    h.advance(2)
    h.call(h.sup.docker_lost)
    listing = [
        ContainerInfo("postgres", CID, "p-postgres-1", "exited", "none", 0, "x"),
        ContainerInfo("redpanda", CID2, "p-redpanda-1", "exited", "none", 0, "x"),
    ]
    assert h.call(lambda: h.sup.reconcile(listing)) == ["redpanda"]
    assert h.state()["state"] == "stopped", "the older stop was the user's"


def test_mark_restarting_covers_devsups_own_recreate(h: Harness) -> None:
    """After mark_restarting, the kill/die/stop of devsup's own action are no stop on purpose."""
    h.up()
    h.call(lambda: h.sup.mark_restarting("postgres", "recreate"))
    h.event("kill", signal="15")
    h.event("die", exit_code=0)
    h.event("stop")
    h.event("destroy")
    h.event("create", cid=CID2)
    h.event("start", cid=CID2)
    assert h.restarts == []
    entry = h.state()
    assert (entry["state"], entry["container"]) == ("starting", CID2[:12])
    h.event("die", cid=CID2, exit_code=3)
    assert len(h.restarts) == 1, "the new container's crash is restarted"
