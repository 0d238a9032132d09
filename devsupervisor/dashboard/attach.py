"""The dashboard as the daemon sees it: start with the daemon, stop with it, say where it is.

Keeps the daemon's side to a few lines: construct `Dashboard` with the daemon's seams, `await
start()` before `daemon.started` is logged (its URL goes in that record), put `status()` into
the status object, `await close()` at shutdown. A dashboard that cannot start (port taken, token
file not writable) is logged and left off: it never stops the supervisor.

The port is bound at start, but the HTTP server (aiohttp: ~15 MB and ~0.2 s to import) is loaded
only when the first connection arrives; that connection waits in the listen backlog meanwhile.
A daemon whose page nobody opens never pays for it. The server then takes the reload history
from the event stream's backlog, so the chart still shows the reloads from before.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from devsupervisor.config.model import DashboardConfig
from devsupervisor.dashboard import token_file
from devsupervisor.dashboard.listen import HOST, bind
from devsupervisor.logs.broadcast import Broadcaster
from devsupervisor.status_types import DashboardStatus

if TYPE_CHECKING:
    from devsupervisor.dashboard.live import Dispatch, StatusFn
    from devsupervisor.dashboard.server import DashboardServer

log = structlog.get_logger()


class Dashboard:
    """Args:
    config: the config's `dashboard` value (`False`: off).
    state_file: the daemon's state file; the token file lives beside it.
    dispatch, status, events, stacks: the server's seams (see `DashboardServer`).
    """

    def __init__(
        self,
        config: DashboardConfig | Literal[False],
        *,
        state_file: Path,
        dispatch: Dispatch,
        status: StatusFn,
        events: Broadcaster[dict[str, Any]],
        stacks: Callable[[], Sequence[str]],
    ) -> None:
        self._config = config
        self.token_path = token_file.token_path(state_file)
        self._token = token_file.new_token()
        self._seams: dict[str, Any] = {
            "dispatch": dispatch,
            "status": status,
            "events": events,
            "stacks": stacks,
        }
        self._sock: socket.socket | None = None
        self._server: DashboardServer | None = None
        self._loading: asyncio.Task[None] | None = None
        self.url: str | None = None

    async def start(self) -> str | None:
        """Write the token file and bind the port; the URL, or None when off or failed."""
        if self._config is False:
            return None
        try:
            token_file.write_token(self.token_path, self._token)
            self._sock = bind(self._config.port)
        except OSError as exc:
            log.error("dashboard.failed", error=str(exc), token_path=str(self.token_path))
            token_file.remove_token(self.token_path, self._token)
            return None
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._first_connection)
        self.url = f"http://{HOST}:{self._sock.getsockname()[1]}/"
        log.info("dashboard.listening", url=self.url)
        return self.url

    def _first_connection(self) -> None:
        assert self._sock is not None
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._loading = asyncio.get_running_loop().create_task(self._serve(self._sock))

    async def _serve(self, sock: socket.socket) -> None:
        # Imported in a thread: the daemon's loop keeps serving while aiohttp loads.
        module = await asyncio.to_thread(importlib.import_module, "devsupervisor.dashboard.server")
        server: DashboardServer = module.DashboardServer(
            **self._seams, token=self._token, port=sock.getsockname()[1]
        )
        await server.start(sock)
        self._server = server

    def status(self) -> DashboardStatus | None:
        """`status.dashboard`: the URL without the token, or None."""
        return {"url": self.url} if self.url is not None else None

    async def close(self) -> None:
        if self.url is None or self._sock is None:
            return
        if self._loading is not None:
            await asyncio.wait({self._loading})
        else:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if self._server is not None:
            await self._server.close()
        else:
            self._sock.close()
        token_file.remove_token(self.token_path, self._token)
        self.url = None
