"""`GET /api/events`: the page's live feed as server-sent events.

Each connection gets `meta` (stack names), `status`, `history` and `ports` whenever they differ
from what it last sent, and, when it asks for one (`?logs=NAME&lines=N`), one log source live.
Status changes have no event of their own: a connection re-reads the status when woken (an event
was published, a command ran) and at least every `interval`, and sends it only when it differs
outside the fields that tick by themselves (uptimes; the page counts those up itself).

A log follow goes through the command layer (`logs` with `follow`), like `devsup logs -f`: its
subscription drops and marks when the browser reads slowly, so the daemon never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web

from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.dashboard import sse
from devsupervisor.dashboard.history import History
from devsupervisor.dashboard.ports import PortLookup

log = structlog.get_logger()

Dispatch = Callable[[Request], Awaitable[Any]]
StatusFn = Callable[[], Mapping[str, Any]]
StacksFn = Callable[[], Sequence[str]]

# Things that change without an event (pending changes, paused) still show within a second.
STATUS_INTERVAL = 1.0
# A dead browser is noticed at the next write; a comment this often makes sure there is one.
KEEPALIVE = 15.0
# The page's log view starts with this many lines when it does not ask for a number.
DEFAULT_LOG_LINES = 300
MAX_LOG_LINES = 5000
# Status fields that change every time they are read.
_TICKING = (("daemon", "uptime"), ("platform", "uptime"))


class LiveFeed:
    """Serves event streams; `wake()` makes every connection look again, `close()` ends them."""

    def __init__(
        self,
        *,
        dispatch: Dispatch,
        status: StatusFn,
        stacks: StacksFn,
        history: History,
        ports: PortLookup,
        interval: float = STATUS_INTERVAL,
    ) -> None:
        self._dispatch = dispatch
        self._status = status
        self._stacks = stacks
        self._history = history
        self._ports = ports
        self._interval = interval
        self._wakeups: set[asyncio.Event] = set()
        self._closing = asyncio.Event()

    def wake(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    def close(self) -> None:
        self._closing.set()
        self.wake()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        stream = _EventStream(response)
        tasks = [asyncio.create_task(self._pump_state(stream, request))]
        source = request.query.get("logs")
        if source:
            lines = _bounded_int(request.query.get("lines"), DEFAULT_LOG_LINES, MAX_LOG_LINES)
            tasks.append(asyncio.create_task(self._pump_logs(stream, source, lines)))
        closing = asyncio.create_task(self._closing.wait())
        try:
            await asyncio.wait([*tasks, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, closing):
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(closing, return_exceptions=True)
        for outcome in outcomes:
            # A browser that left shows up as a connection error: nothing to report.
            if isinstance(outcome, Exception) and not isinstance(outcome, ConnectionError):
                log.error("dashboard.stream_failed", error=f"{type(outcome).__name__}: {outcome}")
        return response

    async def _pump_state(self, stream: _EventStream, request: web.Request) -> None:
        wakeup = asyncio.Event()
        self._wakeups.add(wakeup)
        sent: dict[str, Any] = {}
        idle = 0.0
        try:
            while not self._closing.is_set():
                if request.transport is None or request.transport.is_closing():
                    return
                wakeup.clear()
                if await stream.send_changed(sent, "meta", {"stacks": list(self._stacks())}):
                    idle = 0.0
                status = dict(self._status())
                if await stream.send_changed(sent, "status", status, key=_steady_key(status)):
                    idle = 0.0
                version = self._history.version
                if sent.get("history") != version:
                    await stream.send("history", self._history.snapshot())
                    sent["history"], idle = version, 0.0
                containers = {s["name"]: s.get("container") for s in status.get("services", [])}
                if await stream.send_changed(sent, "ports", await self._ports.ports(containers)):
                    idle = 0.0
                if idle >= KEEPALIVE:
                    await stream.write(sse.comment("keepalive"))
                    idle = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self._interval)
                idle += self._interval
        finally:
            self._wakeups.discard(wakeup)

    async def _pump_logs(self, stream: _EventStream, source: str, lines: int) -> None:
        request = Request(None, "logs", {"name": source, "lines": lines, "follow": True})
        try:
            items = await self._dispatch(request)
        except ProtocolError as exc:
            await stream.send("logerror", {"source": source, "message": exc.message})
            return
        if not isinstance(items, AsyncIterator):
            items = _iterate(items)
        try:
            async for item in items:
                await stream.send("log", sse.log_line(item, source))
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


class _EventStream:
    """One SSE response written by two pumps; the lock keeps their messages whole."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._lock = asyncio.Lock()

    async def send(self, event: str, data: Any) -> None:
        await self.write(sse.frame(event, data))

    async def send_changed(
        self, sent: dict[str, Any], event: str, data: Any, *, key: Any = None
    ) -> bool:
        """Send `data` unless its `key` (default: the data) equals what was sent last."""
        key = data if key is None else key
        if event in sent and sent[event] == key:
            return False
        await self.send(event, data)
        sent[event] = key
        return True

    async def write(self, data: bytes) -> None:
        async with self._lock:
            await self._response.write(data)


async def _iterate(items: Any) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _steady_key(status: Mapping[str, Any]) -> str:
    """The status as JSON without the fields that tick by themselves."""
    steady = json.loads(json.dumps(status, default=str))
    for section, key in _TICKING:
        if isinstance(steady.get(section), dict):
            steady[section].pop(key, None)
    return json.dumps(steady, sort_keys=True)


def _bounded_int(text: str | None, default: int, maximum: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return min(max(value, 0), maximum)
