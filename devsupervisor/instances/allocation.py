"""Host ports for an instance's `ports:` (the contract, "Instances: several checkouts at once").

Each NAME gets its default when that port is free and no other instance of this user holds it,
else the next free port above. A port once given is kept in the instance's state file and
reused while it is free. "Free" also counts a port held by this instance's own containers or
platform (a daemon restarted while its stack runs must keep the ports the stack publishes).

The registry of held ports is the other instances' state files in the state directory: a stopped
instance keeps its ports for its next start, until its checkout (config file) is gone.
Allocation is serialised across this user's daemons with `flock` on one lock file there, and the
chosen ports are written to the state file before the lock is released, so two daemons starting
at the same moment never get the same port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

from devsupervisor import statefile
from devsupervisor.errors import DevsupError
from devsupervisor.logs.pipeline import get_logger

log = get_logger()

LOCK_NAME = "ports.lock"
# The lock is held for a few bind() calls and at most one `docker ps`: a holder for longer than
# this is stuck, and failing with the reason beats waiting forever.
LOCK_TIMEOUT = 60.0
# Poll interval while another daemon holds the lock (flock has no timed wait).
LOCK_POLL = 0.05
# `docker ps` of one project; a slow engine must not hold every other instance's start.
DOCKER_PS_TIMEOUT = 10.0
HIGHEST_PORT = 65535

_PUBLISHED = re.compile(r":(\d+)->")


class PortsExhausted(DevsupError):
    """No free port from a default up to 65535 (or the ports lock could not be taken)."""


IsFree = Callable[[int], bool]
OwnPorts = Callable[[], set[int]]
Save = Callable[[dict[str, int]], object]


def is_free(port: int) -> bool:
    """Whether nothing listens on `port` on any IPv4 address of this machine.

    SO_REUSEADDR makes sockets in TIME_WAIT no obstacle; Linux still refuses the bind when any
    socket listens on a conflicting address (0.0.0.0 conflicts with every one).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # a probe, closed at once, never listens
        except OSError:
            return False
    return True


def compose_published(project: str) -> set[int]:
    """Host ports the running containers of compose project `project` publish (empty when the
    engine does not answer)."""
    argv = [
        "docker",
        "ps",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--format",
        "{{.Ports}}",
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=DOCKER_PS_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    if done.returncode != 0:
        return set()
    return {int(port) for port in _PUBLISHED.findall(done.stdout)}


class PortRegistry:
    """The ports of this user's instances, kept in their state files under `state_dir`.

    Args:
        state_dir: where every instance's `<instance>.json` and the lock file live.
        is_free: whether a port can be given (seam for tests; `is_free` by default).
    """

    def __init__(self, state_dir: Path, *, is_free: IsFree = is_free) -> None:
        self.state_dir = state_dir
        self._is_free = is_free

    def held_by_others(self, instance: str) -> dict[int, str]:
        """port -> the other instance whose state file holds it."""
        held: dict[int, str] = {}
        try:
            files = sorted(self.state_dir.glob("*.json"))
        except OSError:
            return held
        for path in files:
            if path.stem == instance:
                continue
            state = statefile.load(path)
            if state.checkout is not None and not os.path.exists(state.checkout):
                continue  # its checkout was removed (a deleted worktree): it holds nothing
            for port in state.ports.values():
                held.setdefault(port, path.stem)
        return held

    def allocate(
        self,
        instance: str,
        wanted: Mapping[str, int],
        kept: Mapping[str, int],
        *,
        save: Save,
        own: OwnPorts = set,
        given: Collection[int] = (),
    ) -> dict[str, int]:
        """A port for each NAME of `wanted` (NAME -> default), preferring `kept` (the ports this
        instance had), then the default, then the next free port above it. `save` records the
        result in the instance's state file while the lock is still held.

        Args:
            own: the ports this instance's own containers and processes hold (asked only when
                a port is not free, since it may ask the engine).
            given: ports this instance already has for other names (a live reload that adds a
                name): never given twice.

        Raises:
            PortsExhausted: no port left above a default, or the lock cannot be taken.
        """
        if not wanted:
            return {}
        with self._locked():
            held = self.held_by_others(instance)
            taken: set[int] = set(given)
            owned: set[int] | None = None

            def usable(port: int) -> bool:
                nonlocal owned
                if port in held or port in taken:
                    return False
                if self._is_free(port):
                    return True
                if owned is None:
                    owned = own()
                return port in owned

            chosen: dict[str, int] = {}
            for name in wanted:
                port = kept.get(name)
                if port is not None and usable(port):
                    chosen[name] = port
                    taken.add(port)
            for name, default in wanted.items():
                if name in chosen:
                    continue
                port = default
                while not usable(port):
                    port += 1
                    if port > HIGHEST_PORT:
                        raise PortsExhausted(f"ports.{name}: no free port from {default} up")
                chosen[name] = port
                taken.add(port)
            result = {name: chosen[name] for name in wanted}
            save(result)
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the user-wide ports lock (O_NOFOLLOW: a planted symlink is never followed)."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.state_dir / LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise PortsExhausted(f"cannot open the ports lock {path}: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PortsExhausted(f"the ports lock {path} is not a regular file")
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise PortsExhausted(
                            f"another devsup held the ports lock {path} for {LOCK_TIMEOUT:.0f}s"
                        ) from None
                    time.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
