"""The one face both kinds of platform show the supervisor: build, start, wait_ready, stop.

The supervisor never asks which kind it holds; `mode` is only reported in status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from devsupervisor.config.model import PlatformMode
from devsupervisor.platform.build import BuildResult
from devsupervisor.platform.process import ProcessIdentity

LineSink = Callable[[str], None]
# Called on the loop with the exit code when the platform exits without being asked to.
ExitSink = Callable[[int | None], None]


class PlatformTarget(Protocol):
    mode: PlatformMode
    # True when `start` replaces a running instance itself (compose recreate), so a swap skips
    # the separate stop.
    recreates_in_place: bool
    # The last `STATUS=` text the process sent over its NOTIFY_SOCKET (None: none, or a container).
    notify_status: str | None

    @property
    def overlap_swap(self) -> bool:
        """True when the next process may start while this one still serves (held listening
        sockets plus notify readiness); then `fork()` gives the target for that process."""
        ...

    def fork(self) -> PlatformTarget:
        """A fresh target for the next process, sharing what must outlive one process."""
        ...

    async def build(self, on_line: LineSink) -> BuildResult:
        """Produce a new artefact while the current one keeps serving. Cancellable."""
        ...

    async def start(self) -> None:
        """Start the last built artefact. Returns once it runs (not necessarily ready)."""
        ...

    async def wait_ready(self) -> None:
        """Return when it serves. Raises `ready.NotReady` on timeout or early exit."""
        ...

    async def stop(self) -> None:
        """Stop it completely (whole process tree / the container). Idempotent."""
        ...

    def is_running(self) -> bool: ...

    def identity(self) -> ProcessIdentity | None:
        """The host process (pid and start time) for the state file; None for a container."""
        ...

    def has_artefact(self) -> bool:
        """Whether a previous build exists that `start` could run without building."""
        ...

    @property
    def pid(self) -> int | None: ...

    @property
    def container(self) -> str | None: ...

    @property
    def exit_code(self) -> int | None: ...

    def set_exit_sink(self, sink: ExitSink) -> None: ...
