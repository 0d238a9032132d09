"""The platform as a host binary: `go build` in the workdir, run it in its own session.

With `listen`, every process gets the daemon's held sockets (`listeners`); with
`ready: {notify: true}` each process gets its own NOTIFY_SOCKET (`notify_socket`). With both, a
swap can overlap (`overlap_swap`): the owner `fork()`s a twin target, starts it while this one
still serves on the same sockets, waits for its READY=1, and only then stops this one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from devsupervisor.config.model import BinaryConfig, PlatformMode
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.paths import socket_dir
from devsupervisor.platform.build import BuildResult, run_command
from devsupervisor.platform.listeners import Listeners
from devsupervisor.platform.notify_socket import NotifySocket
from devsupervisor.platform.process import ORPHAN_REAPER, ProcessIdentity, stop_tree
from devsupervisor.platform.ready import LogMatcher, PortTaken, stranger_on, wait_ready
from devsupervisor.platform.shell import ShellProcess, new_tag, spawn
from devsupervisor.platform.target import ExitSink, LineSink

log = get_logger()

# After the process is gone its last output lines are still in the pipe; wait briefly for them.
PUMP_DRAIN_TIMEOUT = 0.5


def shell_words(command: str) -> list[str]:
    """The words of a shell string, for guessing only: a string shlex cannot split (an
    unbalanced quote, which sh itself reports when it runs) has no words, never an error."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def run_executable(run: str) -> str | None:
    """The program a `run` string starts, when it names a path (`./bin/x`, `exec ./bin/x`)."""
    argv = shell_words(run)
    while argv and (argv[0] == "exec" or "=" in argv[0]):  # `exec`, `VAR=x` before the program
        argv = argv[1:]
    return argv[0] if argv and "/" in argv[0] else None


def starts_with_exec(run: str) -> bool:
    """Whether `run` execs its program (after any `VAR=x`), which then keeps the shell's pid."""
    words = [w for w in shell_words(run) if "=" not in w]
    return words[:1] == ["exec"]


def build_outputs(config: BinaryConfig) -> list[Path]:
    """Files the build writes: never a reason to build again (no feedback loop).

    The run command's executable and the build's `-o` target are outputs; so is the directory
    holding them when it is a subdirectory of the workdir (`bin/`), because tools write temp
    files beside their output before renaming it into place. Both are guesses from the shell
    strings; one that cannot be parsed adds nothing.
    """
    workdir = config.workdir.resolve()
    targets: list[Path] = []
    executable = run_executable(config.run)
    if executable is not None:
        targets.append((workdir / executable).resolve())
    build = shell_words(config.build)
    targets += [(workdir / v).resolve() for f, v in itertools.pairwise(build) if f == "-o"]
    outputs = set(targets)
    for target in targets:
        if target.parent != workdir and target.parent.is_relative_to(workdir):
            outputs.add(target.parent)
    return sorted(outputs)


class BinaryTarget:
    mode: PlatformMode = "binary"
    recreates_in_place = False

    def __init__(
        self,
        config: BinaryConfig,
        *,
        on_output: LineSink,
        listeners: Listeners | None = None,
        runtime_dir: Path | None = None,
        on_status: Callable[[str], None] = lambda text: None,
    ) -> None:
        """
        Args:
            listeners: the held `listen` sockets, shared by every target of the daemon (default:
                a set of this target's own); each `start` makes them match this config's
                `listen` (binding what is new, keeping what is unchanged).
            runtime_dir: where per-process NOTIFY_SOCKETs go (devsup's socket directory).
            on_status: called with each `STATUS=` text the process sends.
        """
        self._config = config
        self._on_output = on_output
        self._listeners = listeners if listeners is not None else Listeners()
        self._runtime_dir = runtime_dir
        self._on_status = on_status
        self._proc: ShellProcess | None = None
        self._tag: str | None = None
        self._pump: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        # Collects this platform's orphans that end while it runs (devsup is their subreaper).
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = False
        self._matcher: LogMatcher | None = None
        self._notify: NotifySocket | None = None
        self._exit_sink: ExitSink = lambda code: None
        self._last_exit: int | None = None
        self.notify_status: str | None = None  # the last STATUS= text, for `devsup status`

    # -- swaps ------------------------------------------------------------------------------

    @property
    def uses_notify(self) -> bool:
        ready = self._config.ready
        return ready is not None and ready.kind == "notify"

    @property
    def overlap_swap(self) -> bool:
        """Whether the next process may start before this one stops: both accept from the held
        sockets, and READY=1 says when the new one serves (without notify, "ready" could be the
        old process answering a probe on the shared socket)."""
        return bool(self._config.listen) and self.uses_notify

    @property
    def listeners(self) -> Listeners:
        return self._listeners

    def fork(self) -> BinaryTarget:
        """A fresh target for the next process: same config, same held sockets, same sinks."""
        twin = BinaryTarget(
            self._config,
            on_output=self._on_output,
            listeners=self._listeners,
            runtime_dir=self._runtime_dir,
            on_status=self._on_status,
        )
        twin.set_exit_sink(self._exit_sink)
        return twin

    # -- artefact ---------------------------------------------------------------------------

    def artefact_path(self) -> Path | None:
        """The file the run command executes, when it names one (None: unknown)."""
        executable = run_executable(self._config.run)
        return None if executable is None else (self._config.workdir / executable).resolve()

    def has_artefact(self) -> bool:
        path = self.artefact_path()
        return path is None or path.exists()

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self._config.env}

    async def build(self, on_line: LineSink) -> BuildResult:
        return await run_command(
            self._config.build, cwd=str(self._config.workdir), env=self._env(), on_line=on_line
        )

    # -- process ----------------------------------------------------------------------------

    def set_exit_sink(self, sink: ExitSink) -> None:
        self._exit_sink = sink

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.is_running() else None

    @property
    def container(self) -> str | None:
        return None

    @property
    def exit_code(self) -> int | None:
        """The exit code of the last process that ended (None while none has)."""
        return self._last_exit

    def identity(self) -> ProcessIdentity | None:
        return ProcessIdentity.of(self._proc.pid) if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _line(self, line: str) -> None:
        if self._matcher is not None:
            self._matcher.feed(line)
        self._on_output(line)

    def _status(self, text: str) -> None:
        self.notify_status = text
        self._on_status(text)

    async def start(self) -> None:
        """Start one process of the last build.

        Raises:
            ListenError: a `listen` address could not be bound ("platform.binary.listen: ADDR is
                already in use"); the sockets already held stay held.
            PortTaken: another program accepts on the ready check's address (without `listen`,
                the previous process is gone by now, so whoever answers there is a stranger).
        """
        listeners = self._listeners
        listeners.update(self._config.listen)
        ready = self._config.ready
        if not self._config.listen and (taken := await stranger_on(ready)) is not None:
            raise PortTaken(taken)
        self._matcher = LogMatcher(ready.target) if ready and ready.kind == "log" else None
        self._stopping = False
        self._tag = tag = new_tag()
        env = self._env()
        fds: list[int] = []
        if listeners:
            fds = listeners.fds()
            env.update(listeners.env())
            if not starts_with_exec(self._config.run):
                # LISTEN_PID names the shell; the program it forks will not take the sockets.
                log.warning("platform.listen_without_exec", run=self._config.run)
        if self.uses_notify:
            # A directory of their own: the socket directory holds only daemons' control
            # sockets, which `devsup ls` and the only-socket fallback of clients go through.
            directory = self._runtime_dir or socket_dir() / "notify"
            self._notify = NotifySocket(directory, tag, on_status=self._status)
            env["NOTIFY_SOCKET"] = str(self._notify.path)
        else:
            env.pop("NOTIFY_SOCKET", None)  # devsup's own (systemd's) is not the platform's
        self.notify_status = None
        self._proc, self._pump = await spawn(
            self._config.run,
            cwd=str(self._config.workdir),
            env=env,
            on_line=self._line,
            listen_fds=fds,
            tag=tag,
        )
        if self._notify is not None:
            self._notify.watch(self._proc.pid)
        log.debug("platform.spawned", pid=self._proc.pid, command=self._config.run, fds=len(fds))
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_task(self._watch_exit(self._proc, tag))
        if self._reaper is None or self._reaper.done():
            self._reaper = loop.create_task(ORPHAN_REAPER.run_every())

    async def _watch_exit(self, proc: ShellProcess, tag: str) -> None:
        code = await proc.wait()
        self._last_exit = code
        if self._stopping or proc is not self._proc:
            return
        # Its children may still run (a shell that forked the server, a helper); they hold the
        # port or the log pipe, so the next start must not meet them.
        await stop_tree(
            proc.pid,
            stop_signal=self._config.stop_signal,
            timeout=self._config.stop_timeout,
            pgid=proc.pid,
            tag=tag,
            leader_gone=True,
            name="platform-leftovers",
        )
        ORPHAN_REAPER.scan()
        if not self._stopping and proc is self._proc:
            self._exit_sink(code)

    async def wait_ready(self) -> None:
        notified = self._notify.ready if self._notify is not None else None
        await wait_ready(
            self._config.ready,
            is_alive=self.is_running,
            log_matcher=self._matcher,
            notified=notified,
        )

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        await stop_tree(
            proc.pid,
            stop_signal=self._config.stop_signal,
            timeout=self._config.stop_timeout,
            pgid=proc.pid,
            tag=self._tag,
            leader_gone=proc.returncode is not None,
            name="platform",
        )
        self._last_exit = await proc.wait()
        if self._reaper is not None:
            self._reaper.cancel()
        ORPHAN_REAPER.scan()
        if self._pump is not None:
            # A daemonised grandchild that escaped the tree could hold the pipe open forever.
            await asyncio.wait({self._pump}, timeout=PUMP_DRAIN_TIMEOUT)
            self._pump.cancel()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        self._proc = None
