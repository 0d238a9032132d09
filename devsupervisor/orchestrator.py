"""What runs: the chosen stack's compose services, its platform, and every change to them
(entering a stack, switching, restarts, live config and compose reloads, Docker coming back).

Loop-only. One operation at a time changes the stack (`_op_lock`): a switch, a reload and a
reconcile never interleave. The daemon owns process-level concerns (socket, signals, watchers,
the state file) and hands this object what it needs through the constructor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from devsupervisor.config.model import Config
from devsupervisor.errors import ConfigError, DevsupError, OperationFailed, UsageError
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.binary import BinaryTarget
from devsupervisor.platform.container import ContainerTarget
from devsupervisor.platform.supervisor import PlatformSupervisor
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.stack.compose import UP_TIMEOUT
from devsupervisor.stack.dependencies import Dependencies
from devsupervisor.stack.manager import StackManager
from devsupervisor.statefile import SavedState
from devsupervisor.states import STACK_EDGES, StackState, transition

log = get_logger()

# Config sections compared on a live reload; `project` cannot change while running.
RELOADABLE = ("compose", "stacks", "default_stack", "platform", "dependencies", "on_exit")


class Orchestrator:
    def __init__(
        self,
        config: Config,
        stack: str,
        *,
        saved: SavedState,
        fingerprint: Callable[[], str],
        on_change: Callable[[], None],
        on_platform_output: Callable[[str], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.config = config
        self.stack_name = stack
        self.stack_state = StackState.STARTING
        self.stack_error: str | None = None
        self.paused = False
        self.platform: PlatformSupervisor | None = None
        self.stacks = StackManager(config, on_output=_compose_output)
        self.deps: Dependencies | None = None
        if any(config.compose_files(s) for s in config.stacks):
            self.deps = Dependencies(
                config,
                platform_service=self.stacks.platform_service,
                on_platform_died=self._on_platform_container_died,
                on_dependency_restarted=self._on_dependency_restarted,
                on_lost=self._on_docker_lost,
                on_back=self.on_docker_back,
            )
        self._saved = saved
        self._fingerprint = fingerprint
        self._on_change = on_change
        self._on_platform_output = on_platform_output
        self._spawn = spawn
        # The previous platform, kept serving until its successor is built and starts.
        self._retiring: PlatformSupervisor | None = None
        self._op_lock = asyncio.Lock()

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, state: StackState) -> None:
        if state != self.stack_state:
            self.stack_state = transition(STACK_EDGES, self.stack_state, state)
            self._on_change()

    def summary(self) -> str:
        """One short human line (systemd's STATUS=, error messages)."""
        platform = self.platform.state.value if self.platform else "stopped"
        return f"{self.stack_name}: {self.stack_state.value}, platform {platform}"

    def platform_status(self) -> dict[str, Any]:
        if self.platform is not None:
            return self.platform.status()
        return {
            "mode": self.config.stacks[self.stack_name].platform,
            "state": "stopped",
            "pid": None,
            "container": None,
            "uptime": None,
            "restarts": 0,
            "last_build": None,
            "last_reload": None,
        }

    def services_status(self) -> list[dict[str, Any]]:
        return self.deps.supervisor.status() if self.deps else []

    def docker_status(self) -> dict[str, Any]:
        return self.deps.status() if self.deps else {"available": False, "error": None}

    # -- lifecycle --------------------------------------------------------------------------

    def start_docker_events(self) -> None:
        if self.deps is not None:
            self.deps.start()

    async def start(self) -> bool:
        """Enter the chosen stack (daemon start)."""
        async with self._op_lock:
            return await self._enter(self.stack_name, None)

    async def shutdown(self, *, down: bool) -> None:
        """Stop the platform (and with `down` the stack's containers; volumes stay)."""
        self._set_state(StackState.STOPPING)
        if self.platform is not None:
            await self.platform.stop()
        await self._retire_old_platform()
        if down:
            try:
                await self.stacks.down(self.stack_name)
            except DevsupError as exc:
                log.error("stack.down_failed", stack=self.stack_name, reason=str(exc))
        if self.deps is not None:
            await self.deps.stop()

    # -- entering a stack -------------------------------------------------------------------

    async def _enter(self, name: str, previous: str | None) -> bool:
        """Bring up `name`'s services, then its platform; True when both are up."""
        self.stack_error = None
        services_ok = await self._apply_services(name, previous)
        # A host binary needs no Docker: it runs even when services failed (or Docker is
        # absent), so the edit loop keeps working; a platform container would not come up.
        if not services_ok and self.config.stacks[name].platform != "binary":
            return False
        ok = await self._apply_platform(name) and services_ok
        self._set_state(StackState.RUNNING if ok else StackState.DEGRADED)
        return ok

    async def _apply_services(self, name: str, previous: str | None) -> bool:
        """`up` the stack's services (compose recreates only what changed); False on failure,
        with everything that already ran left running."""
        try:
            services = await self.stacks.services_of(name)
            if self.deps is not None:
                # Supervise the new set before the old one's extra services are removed, so
                # their removal is not taken for crashes.
                self.deps.supervisor.set_services(services)
            await self.stacks.bring_up(name, previous, wait=self.deps is None)
            if self.deps is not None:
                await self.deps.wait_up(services, UP_TIMEOUT)
                await self.deps.reconcile(services)
        except DevsupError as exc:
            self.stack_error = str(exc)
            log.error("stack.failed", stack=name, reason=str(exc))
            self._set_state(StackState.DEGRADED)
            return False
        return True

    def _make_target(self, mode: str, stack: str) -> PlatformTarget:
        binary = self.config.platform.binary
        if mode == "binary":
            assert binary is not None, "validation requires platform.binary for binary stacks"
            return BinaryTarget(binary, on_output=self._on_platform_output)
        container = self.config.platform.container
        assert container is not None, "validation requires platform.container for those stacks"
        return ContainerTarget(
            self.stacks.compose_for(stack),
            container.service,
            prebuild=container.prebuild,
            workdir=binary.workdir if binary is not None else None,
            on_output=self._on_platform_output,
        )

    async def _apply_platform(self, name: str) -> bool:
        """Run the platform in `name`'s mode with the current config, building first when the
        sources changed since the last successful build in that mode.

        A platform already running keeps serving until the new one is built: it is stopped just
        before the new one starts (no port clash), and not at all if the build fails.
        """
        mode = self.config.stacks[name].platform
        old = self.platform
        if old is not None:
            self._retiring = old
            old.scheduler.pause()

        def built() -> None:
            self._saved.builds[mode] = self._fingerprint()
            self._on_change()

        self.platform = PlatformSupervisor(
            self._make_target(mode, name),
            debounce=self.config.platform.watch.debounce,
            on_output=_build_output,
            on_built=built,
            on_state=self._on_change,
            before_start=self._retire_old_platform if old is not None else None,
        )
        if self.paused:
            self.platform.scheduler.pause()
        stale = self._saved.builds.get(mode) != self._fingerprint()
        ok = await self.platform.enter(build_first=stale)
        if not ok and self.stack_error is None:
            self.stack_error = f"platform {self.platform.state.value}"
        return ok

    async def _retire_old_platform(self) -> None:
        old, self._retiring = self._retiring, None
        if old is not None:
            await old.stop()

    # -- commands ---------------------------------------------------------------------------

    async def switch(self, name: str, *, wait: bool = True) -> bool | None:
        """Move to stack `name`. With `wait`, return whether it came up; else None at once."""
        task = self._spawn(self._switch(name))
        return await task if wait else None

    async def _switch(self, name: str) -> bool:
        async with self._op_lock:
            previous = self.stack_name
            started = time.monotonic()
            self._set_state(StackState.SWITCHING)
            log.info("stack.switching", stack=name, previous=previous)
            self.stack_name = name
            self._on_change()
            ok = await self._enter(name, previous)
            log.info(
                "stack.switched",
                stack=name,
                previous=previous,
                ok=ok,
                reason=self.stack_error,
                duration=round(time.monotonic() - started, 3),
            )
            return ok

    async def restart(self, name: str) -> dict[str, Any]:
        """Restart `platform` or one compose service of the chosen stack."""
        if name != "platform":
            if self.deps is None or name not in await self.stacks.services_of(self.stack_name):
                raise UsageError(f"no service named {name!r} in stack {self.stack_name}")
            await self.deps.restart_service(name)
            return next(s for s in self.deps.supervisor.status() if s["name"] == name)
        if self.platform is None:
            raise OperationFailed("the platform is not set up yet")
        if not await self.platform.restart():
            raise OperationFailed(f"platform did not come back: {self.platform.state.value}")
        return self.platform.status()

    def pause(self) -> None:
        self.paused = True
        if self.platform is not None:
            self.platform.scheduler.pause()
        log.info("watch.paused")

    def resume(self) -> None:
        self.paused = False
        if self.platform is not None:
            self.platform.scheduler.resume()
        log.info("watch.resumed")

    # -- live reloads -----------------------------------------------------------------------

    async def reapply_services(self, files: list[str]) -> None:
        """Compose files or .env changed: `up` again, so only changed services are recreated."""
        async with self._op_lock:
            log.info("stack.reapplying", stack=self.stack_name, files=files)
            self.stacks.forget_models()
            if await self._apply_services(self.stack_name, self.stack_name):
                self._set_state(StackState.RUNNING)

    async def apply_config(
        self, new: Config, *, restart_watcher: Callable[[], Coroutine[Any, Any, None]]
    ) -> list[str]:
        """Apply a valid new config, restarting only what changed; returns the changed sections.

        Raises:
            ConfigError: the edit cannot be applied live (project renamed, running stack gone).
        """
        if new.project != self.config.project:
            raise ConfigError(
                "changing the project needs a restart of devsup (it names the socket)",
                file=str(new.source),
                key="project",
            )
        if self.stack_name not in new.stacks:
            raise ConfigError(
                f"the running stack {self.stack_name!r} was removed; switch to another first",
                file=str(new.source),
                key="stacks",
            )
        changed = [f for f in RELOADABLE if getattr(self.config, f) != getattr(new, f)]
        if not changed:
            return changed
        async with self._op_lock:
            old, self.config = self.config, new
            self.stacks = StackManager(new, on_output=_compose_output)
            if self.deps is not None:
                self.deps.supervisor.deps = new.dependencies
            if old.platform.watch != new.platform.watch:
                await restart_watcher()
            if {"compose", "stacks"} & set(changed):
                await self._apply_services(self.stack_name, self.stack_name)
            platform_changed = old.platform != new.platform or (
                old.stacks[self.stack_name].platform != new.stacks[self.stack_name].platform
            )
            if platform_changed:
                await self._apply_platform(self.stack_name)
            log.info("config.reloaded", changed=changed, platform_restarted=platform_changed)
        return changed

    # -- Docker events ----------------------------------------------------------------------

    def _on_platform_container_died(self, container: str, exit_code: int | None) -> None:
        if self.platform is not None and isinstance(self.platform.target, ContainerTarget):
            self.platform.target.container_exited(container, exit_code)

    def _on_dependency_restarted(self, service: str) -> None:
        if service in self.config.platform.restart_on and self.platform is not None:
            log.info("platform.restart_for_dependency", service=service)
            self._spawn(self.platform.restart())

    def _on_docker_lost(self, reason: str) -> None:
        # A host binary keeps running; the stack is degraded until the engine is back.
        if self.stack_state in (StackState.RUNNING, StackState.STARTING):
            self.stack_error = reason
            self._set_state(StackState.DEGRADED)

    async def on_docker_back(self) -> None:
        """The engine is back: bring the chosen stack to its chosen state again."""
        async with self._op_lock:
            ok = await self._apply_services(self.stack_name, self.stack_name)
            platform = self.platform
            if platform is not None and platform.target.mode == "container":
                ok = await platform.restart() and ok
            if ok:
                self.stack_error = None
                self._set_state(StackState.RUNNING)
            log.info("stack.reconciled", stack=self.stack_name, ok=ok)


def _build_output(line: str) -> None:
    log.debug("build.output", line=line)


def _compose_output(line: str) -> None:
    log.debug("compose.output", line=line)
