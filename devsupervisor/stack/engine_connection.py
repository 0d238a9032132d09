"""The Docker engine of this daemon: where it is, and for a remote one the connection to it.

Owned by the daemon, started before anything talks to Docker and stopped after everything has.
For a local engine it only records the address. For `ssh://` it runs the `SshTunnel` and points
this process's DOCKER_HOST at the tunnel's local socket, so every compose call (a child process
inheriting the environment) and every docker SDK client (`docker.from_env()`) goes over the one
connection without being told; DOCKER_CONTEXT is dropped because it would compete.

Before each `up` (`prepare`), the stack's resolved compose model decides the port forwards
(published ports of its services, to the same port on 127.0.0.1 here) and the bind mounts to
report: compose resolves a bind source on this machine, the engine mounts it from its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devsupervisor.config.model import EngineConfig
from devsupervisor.errors import DevsupError
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack import compose_model, engine
from devsupervisor.stack.ssh_tunnel import SshTunnel
from devsupervisor.status_types import EngineStatus

if TYPE_CHECKING:
    from devsupervisor.stack.compose import Compose

log = get_logger()


class EngineConnection:
    """The engine address (config, DOCKER_HOST, context) and, for ssh, its one connection."""

    def __init__(
        self,
        configured: EngineConfig | None,
        runtime_dir: Path,
        *,
        env: MutableMapping[str, str] | None = None,
        ssh: Sequence[str] = ("ssh",),
        on_lost: Callable[[str], None] = lambda reason: None,
        on_back: Callable[[], None] = lambda: None,
    ) -> None:
        self._env = os.environ if env is None else env
        self.configured = configured  # what the config said (a live reload compares it)
        self.address = engine.resolve(configured.host if configured else None, self._env)
        self.tunnel: SshTunnel | None = None
        destination = self.address.ssh
        if destination is not None:
            self.tunnel = SshTunnel(
                destination, runtime_dir, on_lost=on_lost, on_back=on_back, ssh=ssh
            )
        self.bind_mounts: list[compose_model.BindMount] = []

    @property
    def is_remote(self) -> bool:
        return self.tunnel is not None

    async def start(self) -> None:
        """Point this process at the engine; connect when it is remote (retrying in the
        background when it cannot be reached yet: the platform runs without services)."""
        if self.tunnel is not None:
            self._point_at(self.tunnel.docker_host)
            await self.tunnel.start(retry=True)
        elif self.address.source == "config":
            self._point_at(self.address.host)
        log.info(
            "docker.engine",
            host=self.address.host,
            source=self.address.source,
            via=self.tunnel.docker_host if self.tunnel is not None else None,
            connected=self.tunnel.connected if self.tunnel is not None else None,
        )

    async def stop(self) -> None:
        if self.tunnel is not None:
            await self.tunnel.stop()

    def _point_at(self, host: str) -> None:
        self._env["DOCKER_HOST"] = host
        self._env.pop("DOCKER_CONTEXT", None)

    async def prepare(self, compose: Compose, services: Sequence[str]) -> None:
        """Before `up`: report bind mounts, and forward the services' published ports.

        Only for a remote engine (a local one publishes on this machine already). Never raises:
        a model compose cannot print is `up`'s to report.
        """
        if self.tunnel is None or not compose.enabled:
            return
        files = compose.model.files
        try:
            model = await compose_model.load_model(
                compose.model.argv("config", "--format", "json"),
                cwd=str(files[0].parent),
                env=dict(self._env),
            )
        except DevsupError as exc:
            log.warning("stack.model_unreadable", error=str(exc))
            return
        self.bind_mounts = compose_model.bind_mounts(model, services)
        for mount in self.bind_mounts:
            log.warning(
                "stack.bind_mount",
                service=mount.service,
                source=mount.source,
                target=mount.target,
                message=mount.sentence(),
            )
        wanted = compose_model.published_ports(model, services)
        # Problems are logged (once each) and retried by the tunnel; `status` shows what remains.
        await self.tunnel.set_forwards(wanted)

    def reconfigured(self, new: EngineConfig | None) -> None:
        """A live config edit: the engine is set up once, at start (the SDK clients and the
        tunnel hold it), so a changed `engine` only says it needs a restart."""
        if new != self.configured:
            log.warning(
                "config.engine_changed",
                engine=new.host if new is not None else None,
                running=self.address.host,
                action="restart devsup to use it",
            )

    def status(self, docker_available: bool) -> EngineStatus:
        """`{"host", "connected", "warnings"}`; a local engine is connected when it answers."""
        connected = self.tunnel.connected if self.tunnel is not None else docker_available
        warnings = [m.sentence() for m in self.bind_mounts]
        if self.tunnel is not None:
            warnings += [self.tunnel.problems[port] for port in sorted(self.tunnel.problems)]
        return {"host": self.address.host, "connected": connected, "warnings": warnings}
