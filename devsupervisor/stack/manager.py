"""Compose stacks: bring the chosen stack's services up, and on a switch apply only the
difference (services only the old stack had are stopped and removed; shared ones are left
untouched, so their containers keep their ids). The platform's own container is not managed
here: it is a platform target (`platform/container.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from devsupervisor.config.model import Config
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack.compose import Compose, ComposeFiles

log = get_logger()


class StackManager:
    def __init__(self, config: Config, *, on_output: Callable[[str], None]) -> None:
        self.config = config
        self._on_output = on_output
        self._services: dict[str, list[str]] = {}

    @property
    def platform_service(self) -> str:
        container = self.config.platform.container
        return container.service if container is not None else "platform"

    def compose_for(self, stack: str) -> Compose:
        model = ComposeFiles(
            self.config.instance_name,
            self.config.compose_files(stack),
            self.config.stacks[stack].profiles,
        )
        return Compose(model, on_line=self._on_output, timeout=self.config.compose.timeout)

    async def services_of(self, stack: str) -> list[str]:
        """The compose services devsup keeps running in `stack` (never the platform's own)."""
        if stack not in self._services:
            compose = self.compose_for(stack)
            names = await compose.services() if compose.enabled else []
            self._services[stack] = [n for n in names if n != self.platform_service]
        return self._services[stack]

    def forget_models(self) -> None:
        """Compose files changed: service lists must be read again."""
        self._services.clear()

    async def bring_up(self, stack: str, previous: str | None, *, wait: bool = True) -> list[str]:
        """Start `stack`'s services; with `wait`, until healthy where they have a healthcheck
        (compose's `--wait`; the daemon instead waits on Docker's events when it has them,
        because `--wait` returns about 0.4 s after the last container turned healthy).

        Returns the services started. Raises ComposeError when one does not come up; what
        already runs is left running.
        """
        compose = self.compose_for(stack)
        wanted = await self.services_of(stack)
        if previous is not None and previous != stack:
            gone = [s for s in await self.services_of(previous) if s not in wanted]
            if gone:
                log.info("stack.removing", stack=previous, services=gone)
                await self.compose_for(previous).remove(gone)
        if previous is None and self.config.stacks[stack].platform == "binary" and compose.enabled:
            # A platform container left by an earlier fullstack session would hold the port
            # the host binary needs.
            running = {str(c.get("Service")) for c in await compose.ps()}
            if self.platform_service in running:
                log.info("stack.removing", stack=stack, services=[self.platform_service])
                await compose.remove([self.platform_service])
        if wanted:
            log.info("stack.starting", stack=stack, services=wanted)
            await compose.up(wanted, wait=wait)
        return wanted

    async def down(self, stack: str) -> None:
        compose = self.compose_for(stack)
        if compose.enabled:
            await compose.down()
