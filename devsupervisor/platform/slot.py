"""Which platform processes may be alive: the one that serves (`running`) and, during an
overlap swap, the one it replaces (`retiring`). The owner changes them only through here, so
every live process is always known (the state file lists `live`) and `stop_all` leaves none.

Each start gets a number: an exit reported with an older number is of a process already
replaced, and is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from devsupervisor.platform.target import PlatformTarget

ExitPoster = Callable[[PlatformTarget, int, int | None], None]


class ProcessSlot:
    def __init__(self, post_exit: ExitPoster, *, on_change: Callable[[], None]) -> None:
        self.running: PlatformTarget | None = None
        self.retiring: PlatformTarget | None = None
        self.starts = 0
        # Clock time of the running process's start (None while none runs).
        self.started_at: float | None = None
        self._post_exit = post_exit
        self._on_change = on_change

    @property
    def live(self) -> list[PlatformTarget]:
        return [t for t in (self.retiring, self.running) if t is not None]

    def is_alive(self) -> bool:
        return self.running is not None and self.running.is_running()

    def is_current(self, target: PlatformTarget, start: int) -> bool:
        return target is self.running and start == self.starts

    def occupy(self, target: PlatformTarget) -> int:
        """`target` is about to start as the running process; returns its start number."""
        self.starts += 1
        start = self.starts
        target.set_exit_sink(lambda code: self._post_exit(target, start, code))
        self.running = target
        return start

    def begin_overlap(self, old: PlatformTarget) -> None:
        """`old` keeps serving while the next process starts beside it."""
        self.retiring = old

    async def fall_back(self, failed: PlatformTarget) -> PlatformTarget | None:
        """The overlapping process did not get ready: stop it and make the retiring one the
        running one again. None when there is no live retiring process to fall back to."""
        old = self.retiring
        if old is None or not old.is_running():
            return None
        await failed.stop()
        self.retiring = None
        self.occupy(old)  # a new start number: exits of the failed twin are stale from now on
        return old

    async def stop_retiring(self) -> None:
        old, self.retiring = self.retiring, None
        if old is not None:
            await old.stop()

    async def stop_all(self) -> None:
        await self.stop_retiring()
        running = self.running
        if running is None:
            return
        try:
            await running.stop()
        finally:
            # stop() waits until the whole tree is gone (SIGKILL at the end), so forgetting the
            # target here never loses a live process.
            self.running = None
            self.started_at = None
            self._on_change()
