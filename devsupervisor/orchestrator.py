"""What runs: the chosen stack's compose services and its platform, and the one owner of the
stack lifecycle (entering a stack, switching, live config and compose reloads, Docker coming
back, shutdown).

Stack operations are intents served one at a time by one task (`_run`): a switch, a reload and
a reconcile never interleave, and a caller awaits the outcome of the operation that served its
intent. Shutdown pre-empts: it cancels the operation in flight (compose children are killed
with it), answers everything still queued, then stops the platform and, with `down`, the stack.
The platform has its own owner (`platform/owner.py`); this one only posts intents to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from devsupervisor.config.model import Config
from devsupervisor.errors import ConfigError, DevsupError, OperationFailed, UsageError
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform import intents
from devsupervisor.platform.owner import PlatformOwner
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.stack.services import StackServices
from devsupervisor.states import STACK_EDGES, StackState, transition
from devsupervisor.status_types import DockerStatus, PlatformStatus, ServiceStatus

log = get_logger()

# Config sections compared on a live reload; `project` cannot change while running.
RELOADABLE = (
    "compose",
    "stacks",
    "default_stack",
    "platform",
    "dependencies",
    "on_exit",
    "ports",
)

TargetFactory = Callable[[Config, str], PlatformTarget]


@runtime_checkable
class _Prepares(Protocol):
    """A platform target that can create its process ahead of its start (the container)."""

    async def prepare(self) -> None: ...

    async def discard_prepared(self) -> None: ...


def _preparing(target: PlatformTarget) -> _Prepares | None:
    return target if isinstance(target, _Prepares) else None


@dataclass
class _Op:
    name: str
    run: Callable[[], Coroutine[Any, Any, Any]]
    outcome: asyncio.Future[Any]


class Orchestrator:
    """Owns the stack lifecycle. Construct on the loop, `start()`, then call the operations."""

    def __init__(
        self,
        config: Config,
        stack: str,
        *,
        services: StackServices,
        make_target: TargetFactory,
        fingerprint: Callable[[], Awaitable[str]],
        builds: dict[str, str],
        on_change: Callable[[], None],
        on_build_line: Callable[[str], None],
        restart_watcher: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.stack_name = stack
        self.stack_state = StackState.STARTING
        self.stack_error: str | None = None
        self.paused = False
        self.services = services
        self._make_target = make_target
        self._fingerprint = fingerprint
        # mode -> fingerprint of the sources of the last successful build in that mode
        self._builds = builds
        self._on_change = on_change
        self._restart_watcher = restart_watcher
        self.platform = PlatformOwner(
            make_target(config, stack),
            debounce=config.platform.watch.debounce,
            build_timeout=config.platform.build_timeout,
            on_build_line=on_build_line,
            on_built=self._remember_build,
            on_state=on_change,
        )
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._current: asyncio.Task[Any] | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- state ----------------------------------------------------------------------------------

    def _set_state(self, state: StackState) -> None:
        if self.stack_state not in (state, StackState.STOPPING):
            self.stack_state = transition(STACK_EDGES, self.stack_state, state)
            self._on_change()

    def summary(self) -> str:
        """One short human line (systemd's STATUS=, error messages)."""
        return f"{self.stack_name}: {self.stack_state.value}, platform {self.platform.state.value}"

    def platform_status(self) -> PlatformStatus:
        return self.platform.status()

    def services_status(self) -> list[ServiceStatus]:
        return self.services.status()

    def docker_status(self) -> DockerStatus:
        return self.services.docker_status()

    # -- the owner task -------------------------------------------------------------------------

    def start(self) -> None:
        """Start both owners and enter the chosen stack (its outcome: `await entered()`)."""
        self.platform.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="stack-owner")

    async def _run(self) -> None:
        while True:
            op = await self._queue.get()
            if op.outcome.done():
                continue
            self._current = asyncio.get_running_loop().create_task(op.run(), name=op.name)
            try:
                op.outcome.set_result(await self._current)
            except asyncio.CancelledError:
                if not self._current.cancelled():
                    raise  # this task itself was cancelled (daemon teardown)
                op.outcome.set_result(False)
            except Exception as exc:  # an operation's bug must not kill the owner
                log.exception("stack.operation_failed", operation=op.name, error=str(exc))
                op.outcome.set_result(False)
            finally:
                self._current = None

    async def _submit(self, name: str, run: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        if self._stopping:
            return False
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(name, run, outcome))
        return await outcome

    # -- operations -----------------------------------------------------------------------------

    async def enter_initial(self) -> bool:
        """Enter the chosen stack (daemon start): services first, then the platform."""
        return bool(await self._submit("start", lambda: self._enter(self.stack_name, None)))

    async def switch(self, name: str, *, wait: bool = True) -> bool | None:
        """Move to stack `name`. With `wait`, return whether it came up; else None at once."""
        pending = asyncio.ensure_future(self._submit("switch", lambda: self._switch(name)))
        return bool(await pending) if wait else None

    async def reapply_services(self, files: list[str]) -> bool:
        """Compose files or .env changed: `up` again, so only changed services are recreated."""
        return bool(await self._submit("reapply", lambda: self._reapply(files)))

    async def apply_config(self, new: Config) -> list[str]:
        """Apply a valid new config, restarting only what changed; returns the changed sections.

        Raises:
            ConfigError: the edit cannot be applied live (project renamed, running stack gone).
        """
        result = await self._submit("apply_config", lambda: self._apply_config(new))
        if isinstance(result, ConfigError):
            raise result
        return list(result) if isinstance(result, list) else []

    async def on_docker_back(self) -> None:
        """The engine is back: bring the chosen stack to its chosen state again."""
        await self._submit("reconcile", self._reconcile)

    def on_docker_lost(self, reason: str) -> None:
        """A host binary keeps running; the stack is degraded until the engine is back."""
        if self.stack_state in (StackState.RUNNING, StackState.STARTING):
            self.stack_error = reason
            self._set_state(StackState.DEGRADED)

    async def shutdown(self, *, down: bool) -> None:
        """Stop everything (and with `down` the stack's containers; volumes stay). Pre-empts
        the operation in flight."""
        self._stopping = True
        self._set_state(StackState.STOPPING)
        if self._current is not None:
            self._current.cancel()
            await asyncio.wait({self._current})
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if not op.outcome.done():
                op.outcome.set_result(False)
        if self._task is not None:
            self._task.cancel()
        await self.platform.ask(lambda outcome: intents.Stop(outcome, final=True))
        if down:
            try:
                await self.services.down(self.stack_name)
            except DevsupError as exc:
                log.error("stack.down_failed", stack=self.stack_name, reason=str(exc))
        await self.services.stop()

    # -- platform actions (the platform owner serialises these itself) ------------------------

    async def rebuild(self) -> bool:
        return await self.platform.ask(intents.Rebuild)

    async def restart(self, name: str) -> Any:
        """Restart `platform` or one compose service of the chosen stack."""
        if name != "platform":
            if name not in await self.services.services_of(self.stack_name):
                raise UsageError(f"no service named {name!r} in stack {self.stack_name}")
            return await self.services.restart_service(name)
        if not await self.platform.ask(intents.Restart):
            raise OperationFailed(f"platform did not come back: {self.platform.state.value}")
        return self.platform.status()

    def restart_for_dependency(self, service: str) -> None:
        if service in self.config.platform.restart_on:
            log.info("platform.restart_for_dependency", service=service)
            self.platform.post(intents.Restart(None))

    def pause(self) -> None:
        self.paused = True
        self.platform.post(intents.SetPaused(True))
        log.info("watch.paused")

    def resume(self) -> None:
        self.paused = False
        self.platform.post(intents.SetPaused(False))
        log.info("watch.resumed")

    # -- what the operations do ---------------------------------------------------------------

    async def _enter(self, name: str, previous: str | None) -> bool:
        """Bring up `name`'s services, then its platform; True when both are up."""
        self.stack_error = None
        target = self._make_target(self.config, name)
        prepared = _preparing(target)
        alongside = None if prepared is None else lambda: self._prepare(prepared)
        services_ok = await self._apply_services(name, previous, alongside=alongside)
        # A host binary needs no Docker: it runs even when services failed (or Docker is
        # absent), so the edit loop keeps working; a platform container would not come up.
        if not services_ok and self.config.stacks[name].platform != "binary":
            if prepared is not None:
                await prepared.discard_prepared()
            return False
        ok = await self._apply_platform(name, target) and services_ok
        self._set_state(StackState.RUNNING if ok else StackState.DEGRADED)
        return ok

    async def _prepare(self, target: _Prepares) -> None:
        """Create the platform container while the services get healthy, so its start after
        them is one engine call, not a second compose run. Only when it will not be built
        first (a build replaces the image) and no platform container runs (creating would
        replace it before the services are up)."""
        running = self.platform.running_target
        if running is not None and running.mode == "container":
            return
        built = self._builds.get("container")
        if built is None or built != await self._fingerprint():
            return
        await target.prepare()

    async def _apply_services(
        self,
        name: str,
        previous: str | None,
        *,
        alongside: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        try:
            await self.services.bring_up(name, previous, alongside=alongside)
        except DevsupError as exc:
            self.stack_error = str(exc)
            log.error("stack.failed", stack=name, reason=str(exc))
            self._set_state(StackState.DEGRADED)
            return False
        return True

    async def _apply_platform(self, name: str, target: PlatformTarget | None = None) -> bool:
        """Run the platform in `name`'s mode with the current config (`target`: made for it
        already), building first when the sources changed since the last successful build in
        that mode. What runs now keeps serving until the new one is built (and at all if its
        build fails)."""
        mode = self.config.stacks[name].platform
        built = self._builds.get(mode)
        # Nothing built in this mode yet: build at once, without waiting for the source index.
        stale = built is None or built != await self._fingerprint()
        if target is None:
            target = self._make_target(self.config, name)
        ok = await self.platform.ask(lambda outcome: intents.Enter(target, stale, outcome))
        if not ok and self.stack_error is None:
            self.stack_error = f"platform {self.platform.state.value}"
        return ok

    def _remember_build(self, target: PlatformTarget) -> None:
        # Fingerprints are computed by the watcher on demand; the owner only says which mode.
        asyncio.get_running_loop().create_task(self._store_fingerprint(target.mode))

    async def _store_fingerprint(self, mode: str) -> None:
        self._builds[mode] = await self._fingerprint()
        self._on_change()

    async def _switch(self, name: str) -> bool:
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

    async def _reapply(self, files: list[str]) -> bool:
        log.info("stack.reapplying", stack=self.stack_name, files=files)
        self.services.forget_models()
        ok = await self._apply_services(self.stack_name, self.stack_name)
        if ok:
            self._set_state(StackState.RUNNING)
        return ok

    async def _apply_config(self, new: Config) -> list[str] | ConfigError:
        if new.project != self.config.project:
            return ConfigError(
                "changing the project needs a restart of devsup (it names the socket)",
                file=str(new.source),
                key="project",
            )
        if self.stack_name not in new.stacks:
            return ConfigError(
                f"the running stack {self.stack_name!r} was removed; switch to another first",
                file=str(new.source),
                key="stacks",
            )
        changed = [f for f in RELOADABLE if getattr(self.config, f) != getattr(new, f)]
        if not changed:
            return changed
        old, self.config = self.config, new
        self.services.configure(new)
        self.platform.build_timeout = new.platform.build_timeout
        if old.platform.watch != new.platform.watch:
            await self._restart_watcher()
        # A new port name is a new variable the compose files may publish with: re-apply.
        if {"compose", "stacks", "ports"} & set(changed):
            await self._apply_services(self.stack_name, self.stack_name)
        platform_changed = old.platform != new.platform or (
            old.stacks[self.stack_name].platform != new.stacks[self.stack_name].platform
        )
        if platform_changed:
            await self._apply_platform(self.stack_name)
        log.info("config.reloaded", changed=changed, platform_restarted=platform_changed)
        return changed

    async def _reconcile(self) -> bool:
        ok = await self._apply_services(self.stack_name, self.stack_name)
        if self.platform.target.mode == "container":
            ok = await self.platform.ask(intents.Restart) and ok
        if ok:
            self.stack_error = None
            self._set_state(StackState.RUNNING)
        log.info("stack.reconciled", stack=self.stack_name, ok=ok)
        return ok
