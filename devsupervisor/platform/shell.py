"""Running a config's shell string exactly as `sh -c STRING` does, in its own session.

devsup never rewrites `build`, `run` or `prebuild` (contract "Shell strings"): a string like
`exec ./bin/platform`, `! grep -q X f` or `command -v go` means what it means to sh. The child
starts in a new session, so it leads its own process group and the stop sequence can signal the
group without touching devsup.

Two ways in, one result (a `ShellProcess`: `pid`, `returncode`, `wait()`):
- plain: `/bin/sh -c STRING` through asyncio's subprocess support;
- with inherited sockets (`listen`): the sockets must sit at fds 3, 4, ... and `LISTEN_PID` must
  be the pid of the process that execs the user's string. Python can place fds only with a
  `preexec_fn` (unsafe with threads) or `posix_spawn` file actions, and dash cannot name fds
  above 9, so devsup `posix_spawn`s a two-line sh trampoline with the fds already in place; it
  exports `LISTEN_PID=$$`, changes to the workdir and `exec`s `/bin/sh -c STRING`, so STRING runs
  in a shell whose pid is LISTEN_PID. A `run` string that starts with `exec` makes the platform
  that very process (the documented way to use `listen`); without `exec` the shell forks the
  platform and LISTEN_PID names the shell, which sd_listen_fds(3) readers then rightly ignore.

Every process spawned here carries `DEVSUP_TREE=<tag>` in its environment. Descendants inherit
it, so a double-forked helper (`(setsid cmd &)`) that left the process group and was re-parented
to devsup (the child subreaper) is still recognisable as part of this tree when it is stopped.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

# Output is read in bounded chunks; an over-long line is cut, never accumulated.
from devsupervisor.logs.lines import pump_lines

SHELL = "/bin/sh"
# The environment variable that marks a spawned tree (see the module docstring).
TREE_VAR = "DEVSUP_TREE"
# Placed before the user's string runs: $1 is the workdir, $2 the string itself.
TRAMPOLINE = 'cd -- "$1" || exit 126\nLISTEN_PID=$$; export LISTEN_PID\nexec /bin/sh -c "$2"'
# First inherited fd, by the sd_listen_fds(3) convention (after stdin, stdout, stderr).
LISTEN_FDS_START = 3
# Python ignores SIGPIPE (and XFSZ); a child must start with the defaults, as subprocess gives.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

LineSink = Callable[[str], None]
_tags = itertools.count(1)
# Each tag's root: the pid spawn() started with it (None while the spawn is under way). Only
# these, never their tagged descendants, are waited for by their spawner; see
# `process.OrphanReaper`. Bounded: the oldest trees are forgotten first.
ROOTS: collections.OrderedDict[str, int | None] = collections.OrderedDict()
ROOTS_KEPT = 4096


class ShellProcess(Protocol):
    """What callers use of a spawned shell (asyncio's Process already has this face)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


def new_tag() -> str:
    """A tag unique to this daemon's life: `<daemon pid>.<n>`."""
    tag = f"{os.getpid()}.{next(_tags)}"
    ROOTS[tag] = None
    while len(ROOTS) > ROOTS_KEPT:
        ROOTS.popitem(last=False)
    return tag


async def spawn(
    command: str,
    *,
    cwd: str,
    env: dict[str, str],
    on_line: LineSink,
    listen_fds: Sequence[int] = (),
    tag: str | None = None,
) -> tuple[ShellProcess, asyncio.Task[None]]:
    """Start `sh -c command` in `cwd` in a new session, streaming its output line by line.

    Args:
        listen_fds: sockets to hand over as fds 3, 4, ...; `env` should already hold
            LISTEN_FDS and LISTEN_FDNAMES, LISTEN_PID is set by the trampoline.
        tag: the tree tag (DEVSUP_TREE); a fresh one when None.

    Returns the process and the task that pumps its output (done at EOF).
    """
    tag = tag or new_tag()
    env = {**env, TREE_VAR: tag}
    if not listen_fds:
        proc = await asyncio.create_subprocess_exec(
            SHELL,
            "-c",
            command,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        shell: ShellProcess = proc
        reader = proc.stdout
    else:
        shell, reader = await _spawn_with_fds(command, cwd=cwd, env=env, listen_fds=listen_fds)
    ROOTS[tag] = shell.pid
    pump = asyncio.get_running_loop().create_task(pump_lines(reader, on_line))
    return shell, pump


class SpawnedShell:
    """A posix_spawn'ed child, waited for through a pidfd on the loop (no watcher thread)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 255 << 8  # reaped elsewhere: the status is lost
        if pid == 0:
            return  # readable before the exit status is (never seen, but harmless)
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._done.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)


async def _spawn_with_fds(
    command: str, *, cwd: str, env: dict[str, str], listen_fds: Sequence[int]
) -> tuple[SpawnedShell, asyncio.StreamReader]:
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        actions = _fd_actions(devnull, write_end, listen_fds)
        pid = os.posix_spawn(
            SHELL,
            [SHELL, "-c", TRAMPOLINE, "devsup", cwd, command],
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=DEFAULT_SIGNALS,
            setsigmask=(),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
        os.close(devnull)
    proc = SpawnedShell(pid)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    pipe = os.fdopen(read_end, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return proc, reader


def _fd_actions(
    stdin: int, output: int, listen_fds: Sequence[int]
) -> list[tuple[int, int, int] | tuple[int, int]]:
    """posix_spawn file actions: stdio, then each socket to 3, 4, ... via a scratch fd above all
    of them, so moving one socket never overwrites another that has not moved yet."""
    actions: list[tuple[int, int, int] | tuple[int, int]] = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, output, 1),
        (os.POSIX_SPAWN_DUP2, output, 2),
    ]
    scratch = max([*listen_fds, stdin, output, LISTEN_FDS_START + len(listen_fds)]) + 1
    for i, fd in enumerate(listen_fds):
        actions.append((os.POSIX_SPAWN_DUP2, fd, scratch + i))
    for i in range(len(listen_fds)):
        actions.append((os.POSIX_SPAWN_DUP2, scratch + i, LISTEN_FDS_START + i))
        actions.append((os.POSIX_SPAWN_CLOSE, scratch + i))
    return actions
