"""The daemon: wires config, watcher, platform, control socket and systemd notify together.

Concurrency model
-----------------
One asyncio event loop owns all state. Nothing else mutates it.
- The watchdog observer thread hashes changed files and hands verified changes to the loop with
  `loop.call_soon_threadsafe` (see `watch.py`); the docker events thread does the same.
- Blocking calls (psutil tree walks, the docker SDK, the initial hash scan) run through
  `asyncio.to_thread`; subprocesses (builds, the platform, `docker compose`) are asyncio
  subprocesses.
- Signal handlers only record the signal in a queue; a loop task acts on it
  (`handle_sigterm`, `handle_sigint`), so tests can deliver a "signal" without sending one.
- One stop event (`should_exit`) ends everything: `run()` waits on it, then shuts down in order
  (platform, watcher, stack when `on_exit: down`, socket).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from devsupervisor import __version__, logs, paths, statefile
from devsupervisor.broadcast import Broadcaster, drop_marker
from devsupervisor.config import load_config
from devsupervisor.config.model import Config
from devsupervisor.config_watch import ConfigWatch
from devsupervisor.control.commands import dispatcher
from devsupervisor.control.server import ControlServer
from devsupervisor.dependencies import Dependencies
from devsupervisor.errors import ConfigError, DevsupError, OperationFailed, UsageError
from devsupervisor.notify import Notifier, run_watchdog
from devsupervisor.platform.binary import BinaryTarget
from devsupervisor.platform.container import ContainerTarget
from devsupervisor.platform.supervisor import PlatformSupervisor
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.process import ProcessIdentity, stop_tree
from devsupervisor.stack import StackManager
from devsupervisor.states import STACK_EDGES, StackState, transition
from devsupervisor.watch import SourceWatcher

log = logs.get_logger()

# Event names that `devsup events` streams: the supervisor's decisions, not its chatter.
EVENT_PREFIXES = (
    "change.",
    "build.",
    "platform.",
    "service.",
    "stack.",
    "config.",
    "docker.",
    "daemon.",
)
# Platform output is a log stream of its own, not an event.
OUTPUT_EVENT = "platform.output"


class Daemon:
    """One supervisor for one project. Construct, then `await run()`."""

    def __init__(
        self,
        config: Config,
        *,
        stack: str | None = None,
        console: TextIO | None = sys.stderr,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.project = config.project
        self.socket_path = paths.socket_path(config.project)
        self.state_path = paths.state_file(config.project)
        self.log_path = paths.log_file(config.project)
        self._requested_stack = stack
        self._console = console
        self.notifier = notifier or Notifier.from_env()
        self.should_exit = asyncio.Event()
        self.events: Broadcaster[dict[str, Any]] = Broadcaster(drop_marker)
        self.logs: dict[str, Broadcaster[dict[str, Any]]] = {
            "devsup": Broadcaster(drop_marker),
            "platform": Broadcaster(drop_marker),
        }
        self.saved = statefile.load(self.state_path)
        self.stack_name = self._initial_stack()
        self.stack_state = StackState.STARTING
        self.config_error: str | None = None
        self.down_on_exit = config.on_exit == "down"
        self._started = time.monotonic()
        self._signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
        self._server = ControlServer(self.socket_path, dispatcher(self))
        self._watcher: SourceWatcher | None = None
        self.stacks = StackManager(config, on_output=self._compose_output)
        self.platform: PlatformSupervisor | None = None
        # The previous stack's platform, kept serving until the new one is built and starts.
        self._retiring: PlatformSupervisor | None = None
        self.stack_error: str | None = None
        self.paused = False
        self.deps: Dependencies | None = None
        if any(config.compose_files(stack) for stack in config.stacks):
            self.deps = Dependencies(
                config,
                platform_service=self.stacks.platform_service,
                on_platform_died=self._on_platform_container_died,
                on_dependency_restarted=self._on_dependency_restarted,
                on_back=self._on_docker_back,
            )
        self._tasks: set[asyncio.Task[Any]] = set()
        # Switches and live reloads change the stack one at a time.
        self._op_lock = asyncio.Lock()
        self._definitions: ConfigWatch | None = None

    def _initial_stack(self) -> str:
        if self._requested_stack is not None:
            if self._requested_stack not in self.config.stacks:
                raise UsageError(
                    f"--stack {self._requested_stack}: no such stack in {self.config.source}"
                    f" (stacks: {', '.join(self.config.stacks)})"
                )
            return self._requested_stack
        if self.saved.stack in self.config.stacks:
            return self.saved.stack
        return self.config.default_stack

    # -- logging taps -----------------------------------------------------------------------

    def _tap(self, record: dict[str, Any]) -> None:
        name = str(record.get("event", ""))
        if name == OUTPUT_EVENT:
            source = str(record.get("source", "platform"))
            line = {"ts": record.get("ts"), "source": source, "line": record.get("line", "")}
            self.logs.setdefault(source, Broadcaster(drop_marker)).publish(line)
            return
        self.logs["devsup"].publish(record)
        if name.startswith(EVENT_PREFIXES):
            self.events.publish(record)

    def _platform_output(self, line: str) -> None:
        log.info(OUTPUT_EVENT, source="platform", line=line)

    def _build_output(self, line: str) -> None:
        log.debug("build.output", line=line)

    def _compose_output(self, line: str) -> None:
        log.debug("compose.output", line=line)

    # -- run --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped. Returns the process exit code.

        Raises:
            AlreadyRunning: another daemon serves this project.
        """
        logs.configure(self.log_path, console=self._console, taps=[self._tap])
        await self._server.start()
        try:
            self._install_signal_handlers()
            self._spawn(self._handle_signals())
            self._spawn(run_watchdog(self.notifier, self.should_exit))
            log.info(
                "daemon.started",
                pid=os.getpid(),
                version=__version__,
                project=self.project,
                stack=self.stack_name,
                socket=str(self.socket_path),
                log_file=str(self.log_path),
                config=str(self.config.source),
            )
            await self._stop_previous_platform()
            if self.deps is not None:
                self.deps.start()
            await self._start_watcher()
            self._definitions = ConfigWatch(
                self.config, on_change=self._on_definition_change, loop=asyncio.get_running_loop()
            )
            await asyncio.to_thread(self._definitions.start)
            self._spawn(self._enter_initial_stack())
            await self.should_exit.wait()
            await self._shutdown()
        finally:
            await self._server.close()
            self._remove_signal_handlers()
            for task in self._tasks:
                task.cancel()
            self.notifier.close()
        return 0

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _enter_initial_stack(self) -> None:
        async with self._op_lock:
            ok = await self.enter_stack(self.stack_name)
        self.notifier.ready(self.summary())
        log.info("daemon.ready", stack=self.stack_name, ok=ok)

    async def _shutdown(self) -> None:
        self._set_stack_state(StackState.STOPPING)
        log.info("daemon.stopping", down=self.down_on_exit)
        self.notifier.stopping("stopping")
        if self.platform is not None:
            await self.platform.stop()
        await self._retire_old_platform()
        if self.down_on_exit:
            try:
                await self.stacks.down(self.stack_name)
            except DevsupError as exc:
                log.error("stack.down_failed", stack=self.stack_name, reason=str(exc))
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        if self._definitions is not None:
            await asyncio.to_thread(self._definitions.stop)
        if self.deps is not None:
            await self.deps.stop()
        self._save_state()
        log.info("daemon.stopped")

    def request_stop(self, *, down: bool = False) -> None:
        """Ask the loop to shut down (from a command or a signal)."""
        self.down_on_exit = self.down_on_exit or down
        self.should_exit.set()

    # -- signals: handlers record, the loop acts ---------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signals.put_nowait, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    async def _handle_signals(self) -> None:
        while True:
            sig = await self._signals.get()
            getattr(self, f"handle_{sig.name.lower()}")()

    def deliver_signal(self, sig: signal.Signals) -> None:
        """Queue a signal as if the OS had delivered it (tests, and the handlers themselves)."""
        self._signals.put_nowait(sig)

    def handle_sigterm(self) -> None:
        log.info("daemon.signal", signal="SIGTERM")
        self.request_stop()

    def handle_sigint(self) -> None:
        log.info("daemon.signal", signal="SIGINT")
        self.request_stop()

    # -- platform ---------------------------------------------------------------------------

    def _make_target(self, mode: str, stack: str) -> PlatformTarget:
        if mode == "binary":
            binary = self.config.platform.binary
            assert binary is not None, "validation requires platform.binary for binary stacks"
            return BinaryTarget(binary, on_output=self._platform_output)
        container = self.config.platform.container
        assert container is not None, "validation requires platform.container for those stacks"
        binary = self.config.platform.binary
        return ContainerTarget(
            self.stacks.compose_for(stack),
            container.service,
            prebuild=container.prebuild,
            workdir=binary.workdir if binary is not None else None,
            on_output=self._platform_output,
        )

    def _build_outputs(self) -> list[Path]:
        """Files the build writes: never a reason to build again (no feedback loop).

        The run command's executable and the build's `-o` target are outputs; so is the
        directory holding them when it is a subdirectory of the workdir (`bin/`), because
        tools write temp files beside their output before renaming it into place.
        """
        binary = self.config.platform.binary
        if binary is None:
            return []
        workdir = binary.workdir.resolve()
        targets: list[Path] = []
        argv = shlex.split(binary.run)
        if argv and "/" in argv[0]:
            targets.append((workdir / argv[0]).resolve())
        build = shlex.split(binary.build)
        targets += [(workdir / v).resolve() for f, v in itertools.pairwise(build) if f == "-o"]
        outputs = set(targets)
        for target in targets:
            parent = target.parent
            if parent != workdir and parent.is_relative_to(workdir):
                outputs.add(parent)
        return sorted(outputs)

    async def _start_watcher(self) -> None:
        watch = self.config.platform.watch
        self._watcher = SourceWatcher(
            watch.paths,
            watch.include,
            watch.ignore,
            on_change=self._on_source_change,
            loop=asyncio.get_running_loop(),
            extra_ignored=self._build_outputs(),
        )
        await asyncio.to_thread(self._watcher.start)

    def _on_source_change(self, changed: frozenset[Path]) -> None:
        if self.platform is not None:
            self.platform.on_changes(changed)

    def _fingerprint(self) -> str:
        return self._watcher.fingerprint() if self._watcher is not None else ""

    def _on_built(self, mode: str, fingerprint: str) -> None:
        self.saved.builds[mode] = fingerprint
        self._save_state()

    async def _stop_previous_platform(self) -> None:
        """After a `kill -9` of an earlier daemon, its platform may still run: never two."""
        pid, created = self.saved.platform_pid, self.saved.platform_create_time
        if pid is None or created is None:
            return
        ident = ProcessIdentity(pid, created)
        if ident.process() is None:
            return
        log.warning("platform.orphan_found", pid=pid, action="stopping it before starting ours")
        binary = self.config.platform.binary
        await stop_tree(
            pid,
            stop_signal=binary.stop_signal if binary else signal.SIGTERM,
            timeout=binary.stop_timeout if binary else 5.0,
            name="previous-platform",
        )
        self.saved.platform_pid = self.saved.platform_create_time = None
        self._save_state()

    def _save_state(self) -> None:
        self.saved.stack = self.stack_name
        target = self.platform.target if self.platform is not None else None
        ident = target.identity() if isinstance(target, BinaryTarget) else None
        self.saved.platform_pid = ident.pid if ident else None
        self.saved.platform_create_time = ident.create_time if ident else None
        statefile.save(self.state_path, self.saved)

    def _on_platform_state(self) -> None:
        self._save_state()
        self.notifier.status(self.summary())

    # -- stacks -----------------------------------------------------------------------------

    def _set_stack_state(self, state: StackState) -> None:
        if state != self.stack_state:
            self.stack_state = transition(STACK_EDGES, self.stack_state, state)
            self.notifier.status(self.summary())

    async def enter_stack(self, name: str, previous: str | None = None) -> bool:
        """Bring up `name`'s services, then its platform; True when both are up."""
        self.stack_error = None
        services_ok = await self._apply_services(name, previous)
        # A host binary needs no Docker: it runs even when services failed (or Docker is
        # absent), so the edit loop keeps working; a platform container would not come up.
        if not services_ok and self.config.stacks[name].platform != "binary":
            return False
        ok = await self._apply_platform(name) and services_ok
        self._set_stack_state(StackState.RUNNING if ok else StackState.DEGRADED)
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
            await self.stacks.bring_up(name, previous)
            if self.deps is not None:
                await self.deps.reconcile(services)
        except DevsupError as exc:
            self.stack_error = str(exc)
            log.error("stack.failed", stack=name, reason=str(exc))
            self._set_stack_state(StackState.DEGRADED)
            return False
        return True

    async def _apply_platform(self, name: str) -> bool:
        """Run the platform in `name`'s mode with the current config.

        A platform already running keeps serving until the new one is built: it is stopped just
        before the new one starts (no port clash), and not at all if the build fails.
        """
        mode = self.config.stacks[name].platform
        old = self.platform
        if old is not None:
            self._retiring = old
            old.scheduler.pause()
        self.platform = PlatformSupervisor(
            self._make_target(mode, name),
            debounce=self.config.platform.watch.debounce,
            on_output=self._build_output,
            on_built=lambda: self._on_built(mode, self._fingerprint()),
            on_state=self._on_platform_state,
            before_start=self._retire_old_platform if old is not None else None,
        )
        if self.paused:
            self.platform.scheduler.pause()
        stale = self.saved.builds.get(mode) != self._fingerprint()
        ok = await self.platform.enter(build_first=stale)
        if not ok and self.stack_error is None:
            self.stack_error = f"platform {self.platform.state.value}"
        return ok

    # -- live reloads -----------------------------------------------------------------------

    def _on_definition_change(self, changed: frozenset[Path]) -> None:
        config_changed = self.config.source is not None and self.config.source.resolve() in {
            p.resolve() for p in changed
        }
        self._spawn(self._reload(config_changed, changed))

    async def _reload(self, config_changed: bool, changed: frozenset[Path]) -> None:
        async with self._op_lock:
            if config_changed:
                await self._reload_config()
            else:
                log.info("stack.reapplying", stack=self.stack_name, files=sorted(map(str, changed)))
                self.stacks.forget_models()
                if await self._apply_services(self.stack_name, self.stack_name):
                    self._set_stack_state(StackState.RUNNING)

    async def _reload_config(self) -> None:
        assert self.config.source is not None
        try:
            new = await asyncio.to_thread(load_config, self.config.source)
            changed = self._check_reloadable(new)
        except ConfigError as exc:
            self.config_error = exc.one_line()
            log.error("config.invalid", path=str(self.config.source), error=self.config_error)
            return
        self.config_error = None
        if not changed:
            return
        old, self.config = self.config, new
        self.stacks = StackManager(new, on_output=self._compose_output)
        if self.deps is not None:
            self.deps.supervisor.deps = new.dependencies
        if old.platform.watch != new.platform.watch:
            await self._restart_watcher()
        if {"compose", "stacks"} & set(changed):
            await self._apply_services(self.stack_name, self.stack_name)
        platform_changed = old.platform != new.platform or (
            old.stacks[self.stack_name].platform != new.stacks[self.stack_name].platform
        )
        if platform_changed:
            await self._apply_platform(self.stack_name)
        self.down_on_exit = new.on_exit == "down"
        log.info("config.reloaded", changed=changed, platform_restarted=platform_changed)

    def _check_reloadable(self, new: Config) -> list[str]:
        """Sections that differ; raises ConfigError for edits that need a daemon restart."""
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
        fields = ("compose", "stacks", "default_stack", "platform", "dependencies", "on_exit")
        return [f for f in fields if getattr(self.config, f) != getattr(new, f)]

    async def _restart_watcher(self) -> None:
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        await self._start_watcher()

    # -- Docker events ----------------------------------------------------------------------

    def _on_platform_container_died(self, container: str, exit_code: int | None) -> None:
        if self.platform is not None and isinstance(self.platform.target, ContainerTarget):
            self.platform.target.container_exited(container, exit_code)

    def _on_dependency_restarted(self, service: str) -> None:
        if service in self.config.platform.restart_on and self.platform is not None:
            log.info("platform.restart_for_dependency", service=service)
            self._spawn(self.platform.restart())

    async def _on_docker_back(self) -> None:
        """The engine is back: bring the chosen stack to its chosen state again."""
        async with self._op_lock:
            ok = await self._apply_services(self.stack_name, self.stack_name)
            platform = self.platform
            if platform is not None and platform.target.mode == "container":
                ok = await platform.restart() and ok
            if ok:
                self._set_stack_state(StackState.RUNNING)
            log.info("stack.reconciled", stack=self.stack_name, ok=ok)

    async def _retire_old_platform(self) -> None:
        old, self._retiring = self._retiring, None
        if old is not None:
            await old.stop()

    async def switch(self, name: str, *, wait: bool = True) -> dict[str, Any]:
        """Move to stack `name`; with `wait`, return when it is up (raise if it failed)."""
        if name == self.stack_name and self.stack_state == StackState.RUNNING:
            return self.status()
        task = self._spawn(self._switch(name))
        if not wait:
            return {"switching": name}
        ok = await task
        if not ok:
            raise OperationFailed(f"stack {name} did not come up: {self.summary()}")
        return self.status()

    async def _switch(self, name: str) -> bool:
        async with self._op_lock:
            return await self._switch_locked(name)

    async def _switch_locked(self, name: str) -> bool:
        previous = self.stack_name
        started = time.monotonic()
        self._set_stack_state(StackState.SWITCHING)
        log.info("stack.switching", stack=name, previous=previous)
        self.stack_name = name
        self._save_state()
        ok = await self.enter_stack(name, previous)
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
        """Restart `platform` (or, with a compose stack, one service)."""
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

    def pause(self) -> dict[str, Any]:
        self.paused = True
        if self.platform is not None:
            self.platform.scheduler.pause()
        log.info("watch.paused")
        return {"paused": True}

    def resume(self) -> dict[str, Any]:
        self.paused = False
        if self.platform is not None:
            self.platform.scheduler.resume()
        log.info("watch.resumed")
        return {"paused": False}

    # -- what commands see ------------------------------------------------------------------

    def summary(self) -> str:
        """One short human line for systemd's STATUS=."""
        platform = self.platform.state.value if self.platform else "stopped"
        return f"{self.stack_name}: {self.stack_state.value}, platform {platform}"

    def status(self) -> dict[str, Any]:
        watch = self.config.platform.watch
        platform = (
            self.platform.status()
            if self.platform is not None
            else {
                "mode": self.config.stacks[self.stack_name].platform,
                "state": "stopped",
                "pid": None,
                "container": None,
                "uptime": None,
                "restarts": 0,
                "last_build": None,
                "last_reload": None,
            }
        )
        return {
            "project": self.project,
            "stack": self.stack_name,
            "state": self.stack_state.value,
            "platform": platform,
            "services": self.deps.supervisor.status() if self.deps else [],
            "watcher": {
                "paused": self.platform.scheduler.paused if self.platform else False,
                "paths": [str(p) for p in watch.paths],
                "pending": self.platform.scheduler.pending if self.platform else 0,
            },
            "docker": self.deps.status() if self.deps else {"available": False, "error": None},
            "config_error": self.config_error,
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "uptime": round(time.monotonic() - self._started, 3),
                "socket": str(self.socket_path),
                "log_file": str(self.log_path),
            },
        }

    async def read_logs(self, name: str, lines: int, *, follow: bool) -> Any:
        """Recent log lines of `platform`, `devsup` or a compose service; with `follow`, an
        async iterator that goes on with new ones.

        Raises:
            UsageError: no such log source in the current stack.
        """
        if (
            self.platform is not None
            and name == "platform"
            and self.platform.target.mode == ("container")
        ):
            return await self._service_logs(self.stacks.platform_service, lines, follow)
        if name in self.logs:
            source = self.logs[name]
            return self.follow(source, backlog=lines) if follow else source.recent(lines)
        if name in await self.stacks.services_of(self.stack_name):
            return await self._service_logs(name, lines, follow)
        known = [*self.logs, *await self.stacks.services_of(self.stack_name)]
        raise UsageError(f"no log source {name!r} (sources: {', '.join(known)})")

    async def _service_logs(self, service: str, lines: int, follow: bool) -> Any:
        compose = self.stacks.compose_for(self.stack_name)
        if not follow:
            return [
                {"source": service, "line": line} for line in await compose.logs(service, lines)
            ]

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for line in compose.follow_logs(service, lines):
                yield {"source": service, "line": line}

        return stream()

    async def follow(
        self, source: Broadcaster[dict[str, Any]], backlog: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream `backlog` recent items, then live ones, until the client leaves."""
        async with source.subscribe(backlog=backlog) as sub:
            async for item in sub:
                yield item
