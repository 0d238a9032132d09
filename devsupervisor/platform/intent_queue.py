"""The platform owner's inbox: intents in arrival order, read one at a time, or while some work
runs (so the owner can react to a newer change during a build), with the ones it cannot serve
yet put back at the front. Loop-only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from devsupervisor.platform import intents as i


class IntentQueue:
    def __init__(self) -> None:
        self._items: deque[i.Intent] = deque()
        self._wakeup = asyncio.Event()
        self.closed = False

    def post(self, intent: i.Intent) -> None:
        """Queue `intent`; once closed, answer it False at once instead."""
        if self.closed:
            i.answer(intent, False)
            return
        self._items.append(intent)
        self._wakeup.set()

    async def next(self) -> i.Intent:
        while not self._items:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    async def next_or(self, work: asyncio.Future[Any]) -> i.Intent | None:
        """The next intent, or None once `work` is done (whichever comes first)."""
        while not self._items:
            if work.done():
                return None
            self._wakeup.clear()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        return self._items.popleft()

    def defer(self, held: list[i.Intent]) -> None:
        """Put intents that arrived during an operation back at the front, in order."""
        self._items.extendleft(reversed(held))

    def close(self) -> None:
        """No more intents: answer every queued one False, and later ones as they come."""
        self.closed = True
        while self._items:
            i.answer(self._items.popleft(), False)
