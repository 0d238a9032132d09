"""Signals: the handler only records the signal; a loop task hands it to the owner's
`handle_<signame>` method (uvicorn's signal queue), so tests can deliver a "signal" without
sending one, and nothing runs inside the handler's restricted context.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from devsupervisor.logs.pipeline import get_logger

log = get_logger()

# Signals that end the daemon cleanly: SIGHUP is the terminal of a foreground `devsup run`
# closing, which must stop the platform like SIGTERM does, never orphan it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalInbox:
    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._queue: asyncio.Queue[signal.Signals] = asyncio.Queue()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.deliver, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    def deliver(self, sig: signal.Signals) -> None:
        """Queue a signal as if the OS had delivered it (tests, and the handlers themselves)."""
        self._queue.put_nowait(sig)

    async def run(self) -> None:
        """Hand each signal to `handler.handle_<signame>()`, in order, on the loop."""
        while True:
            sig = await self._queue.get()
            log.info("daemon.signal", signal=sig.name)
            getattr(self._handler, f"handle_{sig.name.lower()}")()
