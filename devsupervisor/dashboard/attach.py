"""The dashboard as the daemon sees it: start with the daemon, stop with it, say where it is.

Keeps the daemon's side to a few lines: construct `Dashboard` with the daemon's seams, `await
start()` before `daemon.started` is logged (its URL goes in that record), put `status()` into
the status object, `await close()` at shutdown. A dashboard that cannot start (port taken, token
file not writable) is logged and left off: it never stops the supervisor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from devsupervisor.config.model import DashboardConfig
from devsupervisor.dashboard import token_file
from devsupervisor.dashboard.live import Dispatch, StatusFn
from devsupervisor.dashboard.server import DashboardServer
from devsupervisor.logs.broadcast import Broadcaster
from devsupervisor.status_types import DashboardStatus

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
        self._server: DashboardServer | None = None
        if config is not False:
            self._server = DashboardServer(
                dispatch=dispatch,
                status=status,
                events=events,
                stacks=stacks,
                token=self._token,
                port=config.port,
            )
        self.url: str | None = None

    async def start(self) -> str | None:
        """Write the token file and serve; the URL, or None when off or failed."""
        if self._server is None:
            return None
        try:
            token_file.write_token(self.token_path, self._token)
            self.url = await self._server.start()
        except OSError as exc:
            log.error("dashboard.failed", error=str(exc), token_path=str(self.token_path))
            token_file.remove_token(self.token_path, self._token)
            self._server = None
            return None
        return self.url

    def status(self) -> DashboardStatus | None:
        """`status.dashboard`: the URL without the token, or None."""
        return {"url": self.url} if self.url is not None else None

    async def close(self) -> None:
        if self._server is not None and self.url is not None:
            await self._server.close()
            token_file.remove_token(self.token_path, self._token)
            self.url = None
