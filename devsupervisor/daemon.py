"""The daemon: one process supervising one project. Wires the log pipeline, the control socket,
signals, systemd notify, the file watchers and the state file around the `Orchestrator` (what
runs: stack services and platform).

Concurrency model
-----------------
One asyncio event loop owns all state. Nothing else mutates it.
- The watchdog observer threads hash changed files and hand verified changes to the loop with
  `loop.call_soon_threadsafe` (`watch/watcher.py`); the docker events thread does the same
  (`stack/docker_events.py`).
- Blocking calls (psutil tree walks, the docker SDK, the initial hash scan, config loading) run
  through `asyncio.to_thread`; subprocesses (builds, the platform, `docker compose`) are asyncio
  subprocesses.
- Signal handlers only record the signal in a queue; a loop task acts on it
  (`handle_sigterm`, `handle_sigint`), so tests can deliver a "signal" without sending one.
- One stop event (`should_exit`) ends everything: `run()` waits on it, then shuts down in order
  (platform, stack when `on_exit: down` or `stop --down`, watchers, docker events, socket).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

from devsupervisor import __version__, paths
from devsupervisor.actions import Actions
from devsupervisor.config import load_config
from devsupervisor.config.model import Config
from devsupervisor.control.commands import dispatcher
from devsupervisor.control.server import ControlServer
from devsupervisor.dashboard.attach import Dashboard
from devsupervisor.errors import ConfigError, UsageError
from devsupervisor.instances import naming as instance
from devsupervisor.instances.allocation import PortsExhausted
from devsupervisor.instances.daemon_ports import InstancePorts
from devsupervisor.logs import pipeline as logs
from devsupervisor.logs.streams import OUTPUT_EVENT, LogStreams
from devsupervisor.orchestrator import Orchestrator
from devsupervisor.platform import intents
from devsupervisor.platform.binary import build_outputs
from devsupervisor.platform.factory import make_target
from devsupervisor.platform.listeners import Listeners
from devsupervisor.platform.process import set_child_subreaper
from devsupervisor.platform.records import live_records, mark_instance, stop_previous
from devsupervisor.platform.target import PlatformTarget
from devsupervisor.signals import SignalInbox
from devsupervisor.stack.engine_connection import EngineConnection
from devsupervisor.stack.services import StackServices
from devsupervisor.statefile import StateStore
from devsupervisor.status_types import Status
from devsupervisor.systemd.notify import Notifier, run_watchdog
from devsupervisor.watch.config_watch import ConfigWatch
from devsupervisor.watch.watcher import SourceWatcher

log = logs.get_logger()


class Daemon:
    """One supervisor for one project. Construct on the loop, then `await run()`."""

    def __init__(
        self,
        config: Config,
        *,
        stack: str | None = None,
        instance_name: str | None = None,
        console: TextIO | None = sys.stderr,
        notifier: Notifier | None = None,
    ) -> None:
        self.project = config.project
        # The instance takes the project's place in every name (the contract, "Instances").
        self.instance = instance.resolve(
            config.project, config.instance, config.source, instance_name
        )
        self.checkout = str(config.source) if config.source is not None else ""
        self.socket_path = paths.socket_path(self.instance)
        self.state_path = paths.state_file(self.instance)
        self.log_path = paths.log_file(self.instance)
        self._console = console
        self.notifier = notifier or Notifier.from_env()
        self.should_exit = asyncio.Event()
        self.streams = LogStreams()
        # Before the state file is read: its warnings (garbage fields, unreadable file) belong
        # in the log file and in `devsup logs devsup`, not only on a console nobody reads.
        logs.configure(self.log_path, console=self._console, taps=[self.streams.tap])
        self.state = StateStore(self.state_path)
        self.saved = self.state.load()
        # Before anything is spawned: every child inherits the ports' variables.
        self.ports = InstancePorts(
            self.instance, self.saved, self.state, use_engine=config.engine is None
        )
        config = self.ports.prepare(config)
        self.config_error: str | None = None
        self.down_on_exit = config.on_exit == "down"
        self._started = time.monotonic()
        self.signals = SignalInbox(self)
        # The platform's `listen` sockets, held for the daemon's life (every process inherits).
        self.listeners = Listeners()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: SourceWatcher | None = None
        self._definitions: ConfigWatch | None = None
        # Started before anything talks to Docker: for ssh:// it points DOCKER_HOST at its tunnel.
        self.engine = EngineConnection(
            config.engine, paths.socket_dir() / f"engine-{self.instance}"
        )
        self.services = StackServices(
            config,
            on_output=_compose_output,
            on_platform_died=self._on_platform_container_died,
            on_dependency_restarted=self._on_dependency_restarted,
            on_lost=self._on_docker_lost,
            on_back=self._on_docker_back,
            before_up=self.engine.prepare,
        )
        self.orchestrator = Orchestrator(
            config,
            _initial_stack(config, stack, self.saved.stack),
            services=self.services,
            make_target=self._make_target,
            fingerprint=self._fingerprint,
            builds=self.saved.builds,
            on_change=self._on_change,
            on_build_line=_build_output,
            restart_watcher=self._restart_watcher,
        )
        self.actions = Actions(
            self.orchestrator,
            self.services,
            self.streams,
            status=self.status,
            request_stop=lambda down: self.request_stop(down=down),
        )
        dispatch = dispatcher(self.actions)
        self._server = ControlServer(self.socket_path, dispatch)
        # The page's actions go through the same command function as the socket's.
        self.dashboard = Dashboard(
            config.dashboard,
            state_file=self.state_path,
            dispatch=dispatch,
            status=self.status,
            events=self.streams.events,
            stacks=lambda: list(self.config.stacks),
        )

    @property
    def config(self) -> Config:
        return self.orchestrator.config

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task the daemon keeps a reference to (and cancels at exit)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _make_target(self, config: Config, stack: str) -> PlatformTarget:
        return make_target(config, stack, self.services, self.listeners, _platform_output)

    # -- run ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped. Returns the process exit code.

        Raises:
            AlreadyRunning: another daemon serves this project.
        """
        await self._server.start()
        # Orphans of the platform's tree (a double fork, `(setsid cmd &)`) come back to devsup
        # instead of init, where the stop sequence finds them by their tree tag.
        set_child_subreaper()
        # Every child inherits the instance: after a `kill -9` the next daemon finds them all.
        mark_instance(self.instance)
        try:
            await self.dashboard.start()
            self.signals.install()
            self.spawn(self.signals.run())
            self.spawn(run_watchdog(self.notifier, self.should_exit))
            log.info(
                "daemon.started",
                pid=os.getpid(),
                version=__version__,
                project=self.project,
                instance=self.instance,
                ports=self.ports.current,
                stack=self.orchestrator.stack_name,
                socket=str(self.socket_path),
                log_file=str(self.log_path),
                config=str(self.config.source),
                dashboard=self.dashboard.url,
            )
            await self._stop_previous_platforms()
            await self.engine.start()
            self.services.start()
            await self._start_watcher()
            self._definitions = ConfigWatch(
                self.config, on_change=self._on_definition_change, loop=asyncio.get_running_loop()
            )
            await asyncio.to_thread(self._definitions.start)
            self.orchestrator.start()
            self.spawn(self._enter_initial_stack())
            await self.should_exit.wait()
            await self._shutdown()
        finally:
            await self.engine.stop()
            await self.dashboard.close()
            await self._server.close()
            self.signals.remove()
            for task in self._tasks:
                task.cancel()
            self.notifier.close()
            self.listeners.close()
        return 0

    async def _enter_initial_stack(self) -> None:
        ok = await self.orchestrator.enter_initial()
        # READY=1 follows the platform's readiness (or the failure to get there).
        self.notifier.ready(self.orchestrator.summary())
        log.info("daemon.ready", stack=self.orchestrator.stack_name, ok=ok)

    async def _shutdown(self) -> None:
        log.info("daemon.stopping", down=self.down_on_exit)
        self.notifier.stopping("stopping")
        await self.orchestrator.shutdown(down=self.down_on_exit)
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        if self._definitions is not None:
            await asyncio.to_thread(self._definitions.stop)
        self._save_state()
        log.info("daemon.stopped")

    def request_stop(self, *, down: bool = False) -> bool:
        """Ask the loop to shut down (from a command or a signal); returns whether the stack
        goes down with it."""
        self.down_on_exit = self.down_on_exit or down
        self.should_exit.set()
        return self.down_on_exit

    # -- signals (`signals.SignalInbox` hands them here, on the loop) --------------------------

    def handle_sigterm(self) -> None:
        self.request_stop()

    # Ctrl-C, and the terminal of a foreground `devsup run` closing: a clean stop all the same.
    handle_sigint = handle_sighup = handle_sigterm

    # -- watchers -------------------------------------------------------------------------------

    async def _start_watcher(self) -> None:
        watch = self.config.platform.watch
        binary = self.config.platform.binary
        self._watcher = SourceWatcher(
            watch.paths,
            watch.include,
            watch.ignore,
            on_change=self._on_source_change,
            loop=asyncio.get_running_loop(),
            extra_ignored=build_outputs(binary) if binary is not None else [],
            # Kept between runs: a restart reads only the files changed meanwhile.
            index_path=self.state_path.with_suffix(".index"),
        )
        await asyncio.to_thread(self._watcher.start)

    async def _restart_watcher(self) -> None:
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
        await self._start_watcher()

    def _on_source_change(self, changed: frozenset[Path]) -> None:
        self.orchestrator.platform.post(intents.SourcesChanged(changed))

    async def _fingerprint(self) -> str:
        if self._watcher is None:
            return ""
        return await self._watcher.fingerprint()

    def _on_definition_change(self, changed: frozenset[Path]) -> None:
        source = self.config.source
        if source is not None and source.resolve() in {p.resolve() for p in changed}:
            self.spawn(self._reload_config(source))
        else:
            self.spawn(self.orchestrator.reapply_services(sorted(map(str, changed))))

    async def _reload_config(self, source: Path) -> None:
        try:
            new = await asyncio.to_thread(load_config, source)
            # On the loop: it sets os.environ; it blocks only when the edit adds a port name.
            new = self.ports.prepare(new)
            await self.orchestrator.apply_config(new)
        except (ConfigError, PortsExhausted) as exc:
            self.config_error = exc.one_line() if isinstance(exc, ConfigError) else str(exc)
            log.error("config.invalid", path=str(source), error=self.config_error)
            return
        self.config_error = None
        self.down_on_exit = new.on_exit == "down"
        self.engine.reconfigured(new.engine)

    # -- Docker events --------------------------------------------------------------------------

    def _on_platform_container_died(self, container: str, exit_code: int | None) -> None:
        target = self.orchestrator.platform.running_target
        died = getattr(target, "container_exited", None)
        if died is not None:
            died(container, exit_code)

    def _on_dependency_restarted(self, service: str) -> None:
        self.orchestrator.restart_for_dependency(service)

    def _on_docker_lost(self, reason: str) -> None:
        self.orchestrator.on_docker_lost(reason)

    async def _on_docker_back(self) -> None:
        await self.orchestrator.on_docker_back()

    # -- state file -----------------------------------------------------------------------------

    async def _stop_previous_platforms(self) -> None:
        """After a `kill -9` of an earlier daemon, its platform may still run: never two."""
        await stop_previous(self.saved.platforms, self.instance, self.config.platform.binary)
        self.saved.platforms = []
        self._save_state()

    def _save_state(self) -> None:
        """Best effort: a state file that cannot be written is reported (status, log), never a
        reason for supervision to stop."""
        self.saved.stack = self.orchestrator.stack_name
        self.saved.platforms = live_records(self.orchestrator.platform.live_targets)
        self.state.save(self.saved)

    def _on_change(self) -> None:
        """Stack or platform state moved: remember it, and tell systemd in a short line."""
        self._save_state()
        self.notifier.status(self.orchestrator.summary())

    # -- what commands see ----------------------------------------------------------------------

    def status(self) -> Status:
        """The status object of the contract."""
        orchestrator = self.orchestrator
        return {
            "project": self.project,
            "instance": self.instance,
            "checkout": self.checkout,
            "ports": dict(self.ports.current),
            "stack": orchestrator.stack_name,
            "state": orchestrator.stack_state.value,
            "platform": orchestrator.platform_status(),
            "services": orchestrator.services_status(),
            "watcher": {
                "paused": orchestrator.paused,
                "paths": [str(p) for p in self.config.platform.watch.paths],
                "pending": orchestrator.platform.scheduler.pending,
            },
            "docker": (docker := orchestrator.docker_status()),
            "engine": self.engine.status(docker["available"]),
            "config_error": self.config_error,
            "state_error": self.state.error,
            "dashboard": self.dashboard.status(),
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "uptime": round(time.monotonic() - self._started, 3),
                "socket": str(self.socket_path),
                "log_file": str(self.log_path),
            },
        }


def _initial_stack(config: Config, requested: str | None, remembered: str | None) -> str:
    """`--stack`, else the stack chosen last time, else `default_stack`."""
    if requested is not None:
        if requested not in config.stacks:
            raise UsageError(
                f"--stack {requested}: no such stack in {config.source}"
                f" (stacks: {', '.join(config.stacks)})"
            )
        return requested
    if remembered in config.stacks:
        return remembered
    return config.default_stack


def _platform_output(line: str) -> None:
    log.info(OUTPUT_EVENT, source="platform", line=line)


def _build_output(line: str) -> None:
    log.debug("build.output", line=line)


def _compose_output(line: str) -> None:
    log.debug("compose.output", line=line)
