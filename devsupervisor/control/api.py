"""What the command table may ask of the daemon: one small protocol that the socket's commands
and the dashboard's actions both go through, so neither depends on how the daemon is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from devsupervisor.logs.broadcast import Broadcaster
    from devsupervisor.status_types import PlatformStatus, Status


class Supervisor(Protocol):
    def status(self) -> Status:
        """The status object of the contract."""
        ...

    def stack_names(self) -> list[str]: ...

    def is_current(self, stack: str) -> bool:
        """Whether `stack` is the chosen stack and running (a switch to it is a no-op)."""
        ...

    async def switch(self, stack: str, *, wait: bool) -> bool | None:
        """Whether the stack came up (with `wait`), else None at once."""
        ...

    def stack_problem(self) -> str:
        """One line saying what is wrong with the stack (after a failed switch)."""
        ...

    async def rebuild(self) -> bool: ...

    def platform_status(self) -> PlatformStatus: ...

    async def restart(self, name: str) -> Any: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def read_logs(self, name: str, lines: int, *, follow: bool) -> Any: ...

    @property
    def events(self) -> Broadcaster[dict[str, Any]]: ...

    def request_stop(self, *, down: bool = False) -> bool:
        """Ask the daemon to stop; returns whether the stack goes down with it."""
        ...
