"""The platform owner under the race sequences that broke the old supervisor, driven directly
with fake targets and a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devsupervisor.platform import intents as i
from devsupervisor.platform.owner import PlatformOwner
from devsupervisor.states import PlatformState
from tests.fast.conftest import make_owner
from tests.fast.fakes import FakeTarget, FakeTimers, World, settle

SAVE = i.SourcesChanged(frozenset({Path("main.go")}))


async def _running(
    world: World, timers: FakeTimers, **kw: object
) -> tuple[PlatformOwner, FakeTarget]:
    target = FakeTarget(world, **kw)  # type: ignore[arg-type]
    owner = make_owner(target, timers)
    assert await owner.ask(lambda o: i.Enter(target, True, o))
    return owner, target


async def _stop(owner: PlatformOwner) -> None:
    await owner.ask(lambda o: i.Stop(o, final=True))


def test_two_rebuilds_share_one_build() -> None:
    """Two clients asking for a rebuild while one runs both get its (successful) outcome."""

    async def scenario() -> None:
        world, timers = World(), FakeTimers()
        owner, _ = await _running(world, timers)
        world.build_gate = asyncio.Event()
        first = asyncio.ensure_future(owner.ask(i.Rebuild))
        await settle()
        second = asyncio.ensure_future(owner.ask(i.Rebuild))
        await settle()
        spawned = world.spawned
        world.build_gate.set()
        assert await first and await second
        assert world.spawned == spawned + 1, "one swap for both"
        assert len(world.alive) == 1
        await _stop(owner)
        assert not world.alive

    asyncio.run(scenario())


def test_superseded_rebuild_reports_the_build_that_replaced_it() -> None:
    """A save during a rebuild cancels it; the caller gets the outcome of the next build."""

    async def scenario() -> None:
        world, timers = World(), FakeTimers()
        owner, _ = await _running(world, timers)
        world.build_gate = asyncio.Event()
        rebuild = asyncio.ensure_future(owner.ask(i.Rebuild))
        await settle()
        owner.post(SAVE)
        await settle()
        assert not rebuild.done(), "superseded, not failed"
        world.build_gate.set()
        timers.advance(1.0)  # the settle window passes: the scheduler fires the next build
        assert await rebuild
        assert owner.state == PlatformState.RUNNING
        await _stop(owner)

    asyncio.run(scenario())


def test_save_during_restart_builds_once_after_it() -> None:
    """A save while `restart platform` runs does not start a second pipeline beside it."""

    async def scenario() -> None:
        world, timers = World(), FakeTimers()
        owner, _ = await _running(world, timers)
        restart = asyncio.ensure_future(owner.ask(i.Restart))
        owner.post(SAVE)  # queued behind the restart, never concurrent with it
        assert await restart
        await settle()
        timers.advance(1.0)
        await settle()
        assert owner.state == PlatformState.RUNNING
        assert len(world.alive) == 1
        await _stop(owner)
        assert not world.alive

    asyncio.run(scenario())


def test_two_enters_while_the_build_is_broken_leave_one_process() -> None:
    """Two config applies while builds fail never leave the old process untracked."""

    async def scenario() -> None:
        world, timers = World(), FakeTimers()
        owner, _ = await _running(world, timers)
        world.builds_ok = False
        world.build_gate = asyncio.Event()
        first = asyncio.ensure_future(owner.ask(lambda o: i.Enter(FakeTarget(world), True, o)))
        await settle()
        second = asyncio.ensure_future(owner.ask(lambda o: i.Enter(FakeTarget(world), True, o)))
        await settle()
        world.build_gate.set()
        assert not await second and not await first
        assert len(world.alive) == 1, "the old one keeps serving"
        assert owner.state == PlatformState.BUILD_FAILED
        await _stop(owner)
        assert not world.alive, "stop stops the process started before the failed applies"

    asyncio.run(scenario())


def test_crash_restarts_after_backoff_then_crashloop() -> None:
    """Exits restart after the backoff; the fifth within a minute is crashloop."""

    async def scenario() -> None:
        world, timers = World(), FakeTimers()
        owner, _ = await _running(world, timers)
        for n in range(4):
            owner.running_target.crash()  # type: ignore[union-attr]
            await settle()
            assert owner.state == PlatformState.CRASHED
            timers.advance(10.0)
            await settle()
            assert owner.state == PlatformState.RUNNING and owner.restarts == n + 1
        owner.running_target.crash()  # type: ignore[union-attr]
        await settle()
        assert owner.state == PlatformState.CRASHLOOP
        assert not world.alive
        assert await owner.ask(i.Restart), "restart leaves crashloop"
        await _stop(owner)

    asyncio.run(scenario())


def test_stop_during_the_first_build() -> None:
    """A stop while the first build runs cancels it and leaves nothing running."""

    async def scenario() -> None:
        world, timers = World(), FakeTimers()
        world.build_gate = asyncio.Event()
        target = FakeTarget(world)
        owner = make_owner(target, timers)
        entered = asyncio.ensure_future(owner.ask(lambda o: i.Enter(target, True, o)))
        await settle()
        assert owner.state == PlatformState.BUILDING
        await _stop(owner)
        assert not await entered
        assert owner.state == PlatformState.STOPPED and not world.alive
        assert not await owner.ask(i.Rebuild), "closed: later intents are answered False"

    asyncio.run(scenario())


def test_overlap_swap_keeps_the_old_process_until_the_new_one_is_ready() -> None:
    """With overlap, the new process starts beside the old one, which then stops; a new one
    that never gets ready is stopped and the old one keeps serving."""

    async def scenario() -> None:
        world, timers = World(max_alive=2), FakeTimers()
        owner, first = await _running(world, timers, overlap=True)
        old_pid = first.pid
        assert await owner.ask(i.Rebuild)
        assert len(world.alive) == 1 and old_pid not in world.alive
        assert world.log[-2:] == [f"spawn {max(world.alive)}", f"gone {old_pid}"]
        serving = owner.status()["pid"]
        world.ready_ok = False
        assert not await owner.ask(i.Rebuild)
        assert list(world.alive) == [serving] and owner.state == PlatformState.RUNNING
        await _stop(owner)
        assert not world.alive

    asyncio.run(scenario())
