"""The exception hierarchy. A leaf module: imports nothing from the package.

Library code raises these; only `cli.py` maps them to exit codes.
"""

from __future__ import annotations


class DevsupError(Exception):
    """Root of every error devsup raises on purpose."""

    exit_code = 1


class UsageError(DevsupError):
    """Bad command-line arguments or a request the daemon cannot act on as asked."""

    exit_code = 2


class ConfigError(DevsupError):
    """A config that cannot be loaded. The message is one line naming file, key and problem."""

    exit_code = 2

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.key = key
        self.line = line
        self.column = column
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.key:
            return f"{where}: {self.key}: {self.problem}"
        return f"{where}: {self.problem}"


class ConfigNotFound(ConfigError):
    """No config file at any of the places devsup looks."""

    def one_line(self) -> str:
        # There is no file to name: the message lists every place that was looked at.
        return self.problem if self.file is None else super().one_line()


class DaemonNotRunning(DevsupError):
    """No daemon answers on the control socket."""

    exit_code = 3


class AlreadyRunning(DevsupError):
    """Another daemon already serves this project's socket."""

    exit_code = 2


class OperationFailed(DevsupError):
    """The requested operation ran and failed (build failed, stack did not come up)."""

    exit_code = 1


class ComposeError(OperationFailed):
    """A `docker compose` invocation failed."""


class CommandTimeout(ComposeError):
    """A docker or compose command did not finish within its timeout; its process tree was
    killed."""


class DockerUnavailable(OperationFailed):
    """The Docker engine does not answer."""


class SocketPathTooLong(DevsupError):
    """The control socket path exceeds what AF_UNIX can bind (108 bytes on Linux)."""

    exit_code = 2


class PeerRefused(DevsupError):
    """The daemon refused the connection (peer uid differs)."""

    exit_code = 3


class UntrustedSocket(PeerRefused):
    """The client refused the socket: its directory or the process serving it is another
    user's."""


class RemoteError(DevsupError):
    """The daemon answered a request with an error envelope."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        # Request-shape errors are the caller's usage problem; everything else is a failed op.
        return 2 if self.code in {"bad_request", "unknown_command", "bad_args"} else 1
