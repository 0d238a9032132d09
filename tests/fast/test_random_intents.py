"""Seeded random intent sequences against the real platform owner: whatever the order of saves,
rebuilds, restarts, crashes, new targets, pauses, broken builds and stops, the invariants hold.

Invariants, checked after every step and at the end:
- at most one platform process alive (two only inside an overlap swap, never more);
- the owner task never dies (an illegal state-machine edge raises inside it);
- after the final stop no process is alive and every caller got an answer.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import structlog

from devsupervisor.platform import intents as i
from devsupervisor.platform.owner import PlatformOwner
from tests.fast.conftest import make_owner
from tests.fast.fakes import FakeTarget, FakeTimers, InvariantBroken, World, settle

SEQUENCES = 500
STEPS = 40


class Violations(World):
    """A world that records invariant breaks instead of raising them into the owner (which
    would treat a raising start as a failed start and hide the break)."""

    broken: list[str]

    def spawn(self, target: FakeTarget) -> int:
        try:
            return super().spawn(target)
        except InvariantBroken as exc:
            self.broken.append(str(exc))
            raise


async def _sequence(seed: int) -> None:
    rng = random.Random(seed)
    overlap = rng.random() < 0.3
    world = Violations(max_alive=2 if overlap else 1)
    world.broken = []
    timers = FakeTimers()
    owner = make_owner(FakeTarget(world, overlap=overlap), timers)
    task = owner._task
    assert task is not None
    answers: list[asyncio.Future[bool]] = []

    def ask(make: object) -> None:
        answers.append(asyncio.ensure_future(owner.ask(make)))  # type: ignore[arg-type]

    ask(lambda o: i.Enter(owner.target, True, o))
    for step in range(STEPS):
        action = rng.randrange(12)
        if action == 0:
            owner.post(i.SourcesChanged(frozenset({Path(f"f{rng.randrange(3)}.go")})))
        elif action == 1:
            ask(i.Rebuild)
        elif action == 2:
            ask(i.Restart)
        elif action == 3:
            running = owner.running_target
            if isinstance(running, FakeTarget):
                running.crash(rng.choice([1, -9]))
        elif action == 4:
            target = FakeTarget(world, overlap=overlap)
            ask(lambda o, t=target: i.Enter(t, rng.random() < 0.7, o))  # type: ignore[misc]
        elif action == 5:
            owner.post(i.SetPaused(rng.random() < 0.5))
        elif action == 6:
            world.builds_ok = rng.random() < 0.7
        elif action == 7:
            world.ready_ok = rng.random() < 0.8
        elif action == 8:
            if world.build_gate is None or world.build_gate.is_set():
                world.build_gate = asyncio.Event()
            else:
                world.build_gate.set()
        elif action == 9:
            timers.advance(rng.choice([0.05, 0.5, 2.0, 11.0]))
        elif action == 10:
            ask(i.Stop)
        await settle(rng.randrange(1, 30))
        _check(owner, world, task, seed, step)
    if world.build_gate is not None:
        world.build_gate.set()
    await owner.ask(lambda o: i.Stop(o, final=True))
    await settle()
    _check(owner, world, task, seed, STEPS)
    assert not world.alive, f"seed {seed}: alive after stop: {world.alive}"
    assert all(a.done() for a in answers), f"seed {seed}: a caller got no answer"
    task.cancel()
    await settle(5)


def _check(
    owner: PlatformOwner, world: Violations, task: asyncio.Task[None], seed: int, step: int
) -> None:
    where = f"seed {seed} step {step}"
    assert not world.broken, f"{where}: {world.broken}"
    assert len(world.alive) <= world.max_alive, f"{where}: {sorted(world.alive)} alive"
    if task.done() and not task.cancelled():
        raise AssertionError(f"{where}: the owner died") from task.exception()


def test_random_intent_sequences_keep_the_invariants() -> None:
    """500 seeded random sequences of 40 intents each: the invariants above hold throughout."""
    started = time.monotonic()

    async def run_all() -> None:
        for seed in range(SEQUENCES):
            await _sequence(seed)

    # Records are captured, not rendered: the owner's lifecycle logging is not under test here.
    with structlog.testing.capture_logs():
        asyncio.run(run_all())
    # Figures for the closing note; speed is not asserted (benchmarks hold timing targets).
    print(f"\n{SEQUENCES} sequences x {STEPS} steps in {time.monotonic() - started:.2f}s")
