"""Running the docker CLI (`docker compose ...`): every call has a deadline, and a timeout or a
cancellation kills the command's whole process tree.

The `docker` CLI runs compose as a plugin child process, so killing only the direct child would
leave the plugin running. Each command therefore starts in a new session (it leads its own
process group) and is stopped with `process.stop_tree` on that group: SIGTERM, a short grace,
then SIGKILL for whatever is left. The command runs without a shell: its argv is a list.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from devsupervisor.errors import CommandTimeout, ComposeError
from devsupervisor.logs.lines import OutputTail, pump_lines
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.process import stop_tree

log = get_logger()

# Default deadline of one docker/compose call (config `compose.timeout` overrides it): `up` of a
# large stack on a cold cache can take minutes; a call hanging longer is wedged.
DEFAULT_TIMEOUT = 300.0
# SIGTERM grace before SIGKILL when a command is stopped: compose reacts to SIGTERM at once.
STOP_GRACE = 2.0
# What a streamed call keeps of its output, for its error message (every line went to on_line).
OUTPUT_TAIL_LINES = 200
OUTPUT_TAIL_BYTES = 32 * 1024

_T = TypeVar("_T")


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    output: tuple[str, ...]  # the last lines of stdout and stderr together

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


async def run_streamed(
    argv: Sequence[str],
    *,
    cwd: str,
    timeout: float,
    on_line: Callable[[str], None],
    label: str,
    env: Mapping[str, str] | None = None,
) -> CliResult:
    """Run `argv` to completion, each output line (stdout and stderr) to `on_line`.

    Raises:
        CommandTimeout: it ran longer than `timeout` seconds (its tree is killed).
        ComposeError: the program could not be started (no docker CLI).
        asyncio.CancelledError: re-raised after its tree is killed.
    """
    tail = OutputTail(OUTPUT_TAIL_LINES, OUTPUT_TAIL_BYTES)

    def sink(line: str) -> None:
        tail.append(line)
        on_line(line)

    proc = await _start(argv, cwd=cwd, label=label, env=env)

    async def finish() -> int:
        assert proc.stdout is not None
        await pump_lines(proc.stdout, sink)
        return await proc.wait()

    code = await _within(proc, finish(), timeout=timeout, label=label)
    return CliResult(code, tail.lines())


async def run_captured(
    argv: Sequence[str],
    *,
    cwd: str,
    timeout: float,
    label: str,
    merge_stderr: bool = False,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run `argv` and return (exit code, stdout, stderr); for commands whose output is small
    by nature (`config --services`, `ps`, `logs --tail N`). Raises as `run_streamed`."""
    proc = await _start(argv, cwd=cwd, label=label, separate_stderr=not merge_stderr, env=env)

    async def finish() -> tuple[int, bytes, bytes]:
        out, err = await proc.communicate()
        return await proc.wait(), out, err or b""

    return await _within(proc, finish(), timeout=timeout, label=label)


async def start_streaming(
    argv: Sequence[str], *, cwd: str, label: str, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start a command that runs until its caller stops it (`logs --follow`), stdout and stderr
    on `stdout`; the caller must `await stop(proc, label)` when done."""
    return await _start(argv, cwd=cwd, label=label, env=env)


async def stop(proc: asyncio.subprocess.Process, label: str) -> None:
    """Stop the command's whole tree (its process group) and reap it. Idempotent."""
    if proc.returncode is None:
        await stop_tree(
            proc.pid, stop_signal=signal.SIGTERM, timeout=STOP_GRACE, pgid=proc.pid, name=label
        )
    await proc.wait()


async def _start(
    argv: Sequence[str],
    *,
    cwd: str,
    label: str,
    separate_stderr: bool = False,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    stderr = asyncio.subprocess.PIPE if separate_stderr else asyncio.subprocess.STDOUT
    log.debug("docker_cli.run", argv=list(argv), cwd=cwd)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise ComposeError(f"{label}: cannot run {argv[0]}: {exc.strerror}") from exc


async def _within(
    proc: asyncio.subprocess.Process, work: Awaitable[_T], *, timeout: float, label: str
) -> _T:
    """Await `work` for at most `timeout` seconds; on timeout or cancellation stop the tree."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        log.warning("docker_cli.timeout", command=label, timeout=timeout, pid=proc.pid)
        await stop(proc, label)
        raise CommandTimeout(f"{label} timed out after {timeout:g}s (stopped)") from None
    except asyncio.CancelledError:
        await asyncio.shield(stop(proc, label))
        raise
