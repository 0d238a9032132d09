"""The platform as a host binary: `go build` in the workdir, run it in its own session."""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
from pathlib import Path

from devsupervisor.config.model import BinaryConfig, PlatformMode
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.build import BuildResult, run_command
from devsupervisor.platform.process import ProcessIdentity, spawn, stop_tree
from devsupervisor.platform.ready import LogMatcher, wait_ready
from devsupervisor.platform.target import ExitSink, LineSink

log = get_logger()

# After the process is gone its last output lines are still in the pipe; wait briefly for them.
PUMP_DRAIN_TIMEOUT = 0.5


def build_outputs(config: BinaryConfig) -> list[Path]:
    """Files the build writes: never a reason to build again (no feedback loop).

    The run command's executable and the build's `-o` target are outputs; so is the directory
    holding them when it is a subdirectory of the workdir (`bin/`), because tools write temp
    files beside their output before renaming it into place.
    """
    workdir = config.workdir.resolve()
    targets: list[Path] = []
    argv = shlex.split(config.run)
    if argv and "/" in argv[0]:
        targets.append((workdir / argv[0]).resolve())
    build = shlex.split(config.build)
    targets += [(workdir / v).resolve() for f, v in itertools.pairwise(build) if f == "-o"]
    outputs = set(targets)
    for target in targets:
        if target.parent != workdir and target.parent.is_relative_to(workdir):
            outputs.add(target.parent)
    return sorted(outputs)


class BinaryTarget:
    mode: PlatformMode = "binary"
    recreates_in_place = False

    def __init__(self, config: BinaryConfig, *, on_output: LineSink) -> None:
        self._config = config
        self._on_output = on_output
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._stopping = False
        self._matcher: LogMatcher | None = None
        self._exit_sink: ExitSink = lambda code: None
        self._last_exit: int | None = None

    # -- artefact ---------------------------------------------------------------------------

    def artefact_path(self) -> Path | None:
        """The file the run command executes, when it names one inside the workdir."""
        argv = shlex.split(self._config.run)
        if not argv or "/" not in argv[0]:
            return None
        return (self._config.workdir / argv[0]).resolve()

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

    async def start(self) -> None:
        ready = self._config.ready
        self._matcher = LogMatcher(ready.target) if ready and ready.kind == "log" else None
        self._stopping = False
        self._proc, self._pump = await spawn(
            self._config.run, cwd=str(self._config.workdir), env=self._env(), on_line=self._line
        )
        log.debug("platform.spawned", pid=self._proc.pid, command=self._config.run)
        self._waiter = asyncio.get_running_loop().create_task(self._watch_exit(self._proc))

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self._last_exit = code
        if not self._stopping and proc is self._proc:
            self._exit_sink(code)

    async def wait_ready(self) -> None:
        await wait_ready(self._config.ready, is_alive=self.is_running, log_matcher=self._matcher)

    async def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.returncode is None:
            await stop_tree(
                proc.pid,
                stop_signal=self._config.stop_signal,
                timeout=self._config.stop_timeout,
                name="platform",
            )
        self._last_exit = await proc.wait()
        if self._pump is not None:
            # A daemonised grandchild that escaped the tree could hold the pipe open forever.
            await asyncio.wait({self._pump}, timeout=PUMP_DRAIN_TIMEOUT)
            self._pump.cancel()
        self._proc = None
