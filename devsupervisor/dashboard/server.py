"""The dashboard's HTTP server: the page, `/api/status`, `POST /api/<command>`, `/api/events`.

Integration is through constructor seams only, so the daemon's core stays unaware of HTTP:
- `dispatch`: the control socket's command function. `POST /api/<command>` builds the same
  `Request` the socket would (through `protocol.parse_request`, so the same validation applies)
  and answers with the same envelope (`protocol.ok` / `protocol.error`): one intent, one reply,
  whichever door it came through. Log follows go through it too (`logs` with `follow`).
- `status`: the status object, read whenever something may have changed.
- `events`: the event stream; it feeds `History` (reload chart, start/switch timeline) and wakes
  the live connections (`live.LiveFeed`), which send the status only when it actually differs.

aiohttp owns the sockets on the daemon's loop. Every request first passes `auth.Guard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from devsupervisor.control import protocol
from devsupervisor.control.protocol import ProtocolError
from devsupervisor.dashboard.auth import Guard
from devsupervisor.dashboard.history import History
from devsupervisor.dashboard.listen import HOST, bind
from devsupervisor.dashboard.live import STATUS_INTERVAL, Dispatch, LiveFeed, StacksFn, StatusFn
from devsupervisor.dashboard.ports import PortLookup
from devsupervisor.logs.broadcast import Broadcaster

log = structlog.get_logger()

# Same bound as a socket request line: a command's args are small.
MAX_BODY = protocol.MAX_LINE
# Requests still running at shutdown (a rebuild from the page) get this long to finish.
SHUTDOWN_TIMEOUT = 1.0
# Events the history keeper takes over from before the dashboard started (daemon.started).
EVENT_BACKLOG = 1000
# Commands whose reply is a stream: served by GET /api/events, not by POST.
_STREAMING = ("logs", "events")
# HTTP status for each error code of the reply envelope.
_HTTP_STATUS = {
    protocol.BAD_REQUEST: 400,
    protocol.BAD_ARGS: 400,
    protocol.UNKNOWN_COMMAND: 404,
    protocol.FAILED: 409,
    protocol.INTERNAL: 500,
}
# The page loads only its own files: no inline script, no third party, no framing.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


class DashboardServer:
    """Serve the dashboard on 127.0.0.1:`port` (0: a free port). Loop-only.

    Args:
        dispatch: the control command function (`control.commands.dispatcher(daemon)`).
        status: returns the status object.
        events: the daemon's event broadcaster (`LogStreams.events`).
        stacks: the config's stack names (the page's switch menu; the status names only one).
        token: the login token (`token_file.new_token()`).
        ports: published-port lookup for the services table (a seam for tests).
    """

    def __init__(
        self,
        *,
        dispatch: Dispatch,
        status: StatusFn,
        events: Broadcaster[dict[str, Any]],
        token: str,
        stacks: StacksFn = tuple,
        port: int = 0,
        ports: PortLookup | None = None,
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        self._dispatch = dispatch
        self._status = status
        self._events = events
        self._token = token
        self._port = port
        self._ports = ports or PortLookup()
        self.history = History()
        self._live = LiveFeed(
            dispatch=dispatch,
            status=status,
            stacks=stacks,
            history=self.history,
            ports=self._ports,
            interval=status_interval,
        )
        self.guard: Guard | None = None
        self._runner: web.AppRunner | None = None
        self._feeder: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self.guard is None:
            raise RuntimeError("dashboard not started")
        return self.guard.port

    @property
    def url(self) -> str:
        """The page's address, without the token."""
        return f"http://{HOST}:{self.port}/"

    async def start(self, sock: socket.socket | None = None) -> str:
        """Bind (or take the listening `sock` bound already), start serving and following
        events. Returns the URL.

        Raises:
            OSError: the port cannot be bound.
        """
        sock = sock or bind(self._port)
        self.guard = Guard(self._token, int(sock.getsockname()[1]))
        app = web.Application(middlewares=[self.guard.middleware], client_max_size=MAX_BODY)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/history", self._api_history)
        app.router.add_get("/api/events", self._live.handle)
        app.router.add_post("/api/{command}", self._api_command)
        app.on_response_prepare.append(_add_security_headers)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._feeder = asyncio.get_running_loop().create_task(self._follow_events())
        log.info("dashboard.serving", url=self.url)
        return self.url

    async def close(self) -> None:
        """End every live connection and stop serving."""
        self._live.close()
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self._ports.close)
        log.info("dashboard.closed")

    # -- change notification ---------------------------------------------------------------

    async def _follow_events(self) -> None:
        async with self._events.subscribe(backlog=EVENT_BACKLOG) as events:
            async for record in events:
                self.history.feed(record)
                self._live.wake()

    # -- page ------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        return _static_file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ("app.js", "style.css"):
            raise web.HTTPNotFound()
        return _static_file(name)

    # -- API -------------------------------------------------------------------------------

    async def _api_status(self, request: web.Request) -> web.Response:
        return _json(self._status())

    async def _api_history(self, request: web.Request) -> web.Response:
        return _json(self.history.snapshot())

    async def _api_command(self, request: web.Request) -> web.Response:
        body = await request.read()
        envelope = await self.command(request.match_info["command"], body)
        self._live.wake()
        status = 200 if envelope["ok"] else _HTTP_STATUS.get(envelope["error"]["code"], 400)
        try:
            data = protocol.encode(envelope)
        except (TypeError, ValueError) as exc:
            log.error("dashboard.unencodable_result", error=str(exc))
            data = protocol.encode(protocol.error(None, protocol.INTERNAL, str(exc)))
            status = 500
        return web.Response(body=data, status=status, content_type="application/json")

    async def command(self, name: str, body: bytes) -> dict[str, Any]:
        """Run one command as the socket would and return its reply envelope.

        `body` is the command's args as a JSON object (empty: no args).
        """
        args = body.strip() or b"{}"
        line = b'{"cmd":' + json.dumps(name).encode() + b',"args":' + args + b"}"
        try:
            request = protocol.parse_request(line)
        except ProtocolError as exc:
            return protocol.error(None, exc.code, exc.message)
        if name in _STREAMING and request.args.get("follow"):
            message = f"{name} with follow is served by GET /api/events"
            return protocol.error(None, protocol.BAD_ARGS, message)
        log.info("dashboard.command", cmd=name)
        try:
            result = await self._dispatch(request)
        except ProtocolError as exc:
            return protocol.error(None, exc.code, exc.message)
        except Exception as exc:
            log.exception("dashboard.dispatch_failed", cmd=name)
            return protocol.error(None, protocol.INTERNAL, f"{type(exc).__name__}: {exc}")
        return protocol.ok(None, result)


def _json(data: Any) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str, ensure_ascii=False), content_type="application/json"
    )


def _static_file(name: str) -> web.Response:
    content = resources.files("devsupervisor.dashboard").joinpath("static", name).read_bytes()
    suffix = name[name.rfind(".") :]
    response = web.Response(body=content, content_type=_STATIC_TYPES[suffix], charset="utf-8")
    response.enable_compression()  # gzip when the browser takes it: ~24 KB becomes ~8 KB
    return response


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
