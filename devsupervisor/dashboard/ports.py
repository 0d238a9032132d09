"""Published ports of the stack's containers, for the services table's links.

The status object names each service's container but not its ports, so the dashboard asks the
Docker engine itself, once per container (a container's published ports never change; a
recreated service has a new container id). Blocking SDK calls run in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger()

# A lookup that takes longer is skipped; the next status change asks again.
LOOKUP_TIMEOUT = 5.0
# Host addresses a browser on this machine reaches as 127.0.0.1 (with a remote engine the
# ports are forwarded to the same port here, the contract, "Remote engine").
LOCAL_BINDS = ("", "0.0.0.0", "127.0.0.1", "::", "::1")
# After a failed lookup (engine gone) the container is not asked about again for this long, so
# a page's live updates do not wait on a dead engine at every status change.
RETRY_AFTER = 10.0
# Containers come and go all day (every recreate is a new id); forget them all past this many.
MAX_CACHED = 256

Port = dict[str, Any]


def published(attrs: Mapping[str, Any]) -> list[Port]:
    """The TCP ports a container publishes on this machine, from `docker inspect` attributes."""
    ports: list[Port] = []
    bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for container_port, binds in sorted(bindings.items()):
        if not container_port.endswith("/tcp"):
            continue
        for bind in binds or []:
            host_port = str(bind.get("HostPort", ""))
            if bind.get("HostIp", "") in LOCAL_BINDS and host_port.isdigit():
                entry = {"port": int(host_port), "target": container_port}
                if entry not in ports:
                    ports.append(entry)
    return ports


class PortLookup:
    """Container id -> published ports, cached per id.

    Args:
        client_factory: makes a docker SDK client (default `docker.from_env`); a seam for tests.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = client_factory
        self._clock = clock
        self._client: Any = None
        self._cache: dict[str, list[Port]] = {}
        self._failed: dict[str, float] = {}

    def _inspect(self, container: str) -> list[Port]:
        if self._client is None:
            if self._factory is None:
                import docker  # noqa: PLC0415 - only a daemon with a dashboard needs it here

                self._factory = docker.from_env
            self._client = self._factory()
        return published(self._client.containers.get(container).attrs)

    async def ports(self, containers: Mapping[str, str | None]) -> dict[str, list[Port]]:
        """Published ports per service name, for services with a container."""
        result: dict[str, list[Port]] = {}
        for service, container in containers.items():
            if not container:
                continue
            if container not in self._cache:
                failed_at = self._failed.get(container)
                if failed_at is not None and self._clock() - failed_at < RETRY_AFTER:
                    continue
                try:
                    found = await asyncio.wait_for(
                        asyncio.to_thread(self._inspect, container), LOOKUP_TIMEOUT
                    )
                except Exception as exc:  # engine gone, container removed meanwhile
                    log.debug("dashboard.ports_failed", container=container, error=str(exc))
                    if len(self._failed) >= MAX_CACHED:
                        self._failed.clear()
                    self._failed[container] = self._clock()
                    continue
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[container] = found
            result[service] = self._cache[container]
        return result

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:
                log.debug("dashboard.docker_close_failed", error=str(exc))
            self._client = None
