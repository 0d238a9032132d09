"""The docker compose CLI, as devsup drives it: one project, layered files, profiles.

Always `docker compose -p PROJECT -f base ... -f stack ... --profile P ... <subcommand>`:
one `-f` per file and global flags before the subcommand (compose ignores a `-f` after it).
Volumes are never removed: no method here passes `-v`. Every call has a deadline
(`docker_cli`): a hung compose call fails with the command named, its process tree killed.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devsupervisor.errors import ComposeError
from devsupervisor.logs.lines import iter_lines
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.build import BuildResult
from devsupervisor.stack import docker_cli
from devsupervisor.stack.docker_cli import DEFAULT_TIMEOUT

log = get_logger()

# Longest a bring-up waits for the stack's services to turn healthy: healthchecks with long start
# periods (a real Postgres initialising its volume) need minutes on first start.
UP_TIMEOUT = 300.0


@dataclass(frozen=True)
class ComposeFiles:
    """What selects a compose model: project, files (in -f order) and profiles."""

    project: str
    files: tuple[Path, ...]
    profiles: tuple[str, ...] = ()

    def argv(self, *subcommand: str) -> list[str]:
        # --ansi never: devsup's logs and `devsup logs` are not terminals.
        args = ["docker", "compose", "--ansi", "never", "-p", self.project]
        for file in self.files:
            args += ["-f", str(file)]
        for profile in self.profiles:
            args += ["--profile", profile]
        return [*args, *subcommand]


class Compose:
    """Runs compose subcommands for one model; output lines go to `on_line`.

    Args:
        timeout: deadline of each call in seconds (config `compose.timeout`); a call may pass
            its own.
        env: the environment of every compose call; devsup's own when None.
    """

    def __init__(
        self,
        model: ComposeFiles,
        *,
        on_line: Callable[[str], None],
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self._on_line = on_line
        self.timeout = timeout
        self.env = env

    @property
    def enabled(self) -> bool:
        """A stack with no compose files runs the platform alone."""
        return bool(self.model.files)

    @property
    def _cwd(self) -> str:
        return str(self.model.files[0].parent) if self.model.files else os.getcwd()

    @staticmethod
    def _label(*subcommand: str) -> str:
        return shlex.join(["docker", "compose", *subcommand])

    async def _run(self, *subcommand: str, timeout: float | None = None) -> docker_cli.CliResult:
        return await docker_cli.run_streamed(
            self.model.argv(*subcommand),
            cwd=self._cwd,
            timeout=self.timeout if timeout is None else timeout,
            on_line=self._on_line,
            label=self._label(*subcommand),
            env=self.env,
        )

    async def _check(self, *subcommand: str) -> None:
        result = await self._run(*subcommand)
        if not result.ok:
            if _no_plugin("\n".join(result.output)):
                raise ComposeError(NO_PLUGIN_REASON)
            tail = f": {result.output[-1]}" if result.output else ""
            raise ComposeError(f"{self._label(*subcommand)} failed (exit {result.exit_code}){tail}")

    async def _capture(self, *subcommand: str, merge_stderr: bool = False) -> tuple[int, str, str]:
        code, out, err = await docker_cli.run_captured(
            self.model.argv(*subcommand),
            cwd=self._cwd,
            timeout=self.timeout,
            label=self._label(*subcommand),
            merge_stderr=merge_stderr,
            env=self.env,
        )
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    async def services(self) -> list[str]:
        """The services this model runs (profiles applied)."""
        code, out, err = await self._capture("config", "--services")
        if code != 0:
            raise ComposeError(
                NO_PLUGIN_REASON if _no_plugin(err) else f"docker compose config: {err.strip()}"
            )
        return [line for line in out.splitlines() if line]

    async def up(
        self,
        services: Sequence[str],
        *,
        wait: bool = True,
        no_deps: bool = False,
        start: bool = True,
    ) -> None:
        """Create/start `services` (only what changed is recreated); without `start`, only
        create them (`--no-start`).

        Raises:
            ComposeError: a service did not come up (exit, or unhealthy within --wait).
            CommandTimeout: compose did not finish within the timeout.
        """
        args = ["up", "-d"] if start else ["up", "--no-start"]
        if wait and start:
            # compose's own wait ends just before ours, so its message names the service.
            args += ["--wait", "--wait-timeout", str(max(1, int(self.timeout) - 5))]
        if no_deps:
            args.append("--no-deps")
        await self._check(*args, *services)

    async def remove(self, services: Sequence[str]) -> None:
        """Stop and remove the containers of `services` (their volumes stay)."""
        if services:
            await self._check("rm", "--stop", "--force", *services)

    async def build(self, service: str, *, timeout: float | None = None) -> BuildResult:
        """Build the service's image; a timeout is a failed build that says so."""
        started = time.monotonic()
        try:
            result = await self._run("build", service, timeout=timeout)
        except ComposeError as exc:
            return BuildResult(False, -1, time.monotonic() - started, (str(exc),))
        return BuildResult(result.ok, result.exit_code, time.monotonic() - started, result.output)

    async def down(self) -> None:
        """Stop and remove the project's containers and network; volumes are kept."""
        await self._check("down", "--remove-orphans")

    async def logs(self, service: str, lines: int) -> list[str]:
        """The last `lines` log lines of a service's container."""
        _, out, _ = await self._capture(
            "logs",
            "--no-color",
            "--no-log-prefix",
            "--tail",
            str(lines),
            service,
            merge_stderr=True,
        )
        return out.splitlines()

    async def follow_logs(self, service: str, lines: int) -> AsyncIterator[str]:
        """Recent lines, then new ones as the container writes them, until the caller stops."""
        subcommand = ("logs", "--no-color", "--no-log-prefix", "--follow", "--tail", str(lines))
        label = self._label(*subcommand, service)
        proc = await docker_cli.start_streaming(
            self.model.argv(*subcommand, service), cwd=self._cwd, label=label, env=self.env
        )
        assert proc.stdout is not None
        try:
            # Bounded: a service printing a huge line without a newline is cut, not buffered.
            async for line in iter_lines(proc.stdout):
                yield line
        finally:
            await docker_cli.stop(proc, label)

    async def ps(self) -> list[dict[str, object]]:
        """Containers of the project (all states), as compose reports them."""
        _, out, _ = await self._capture("ps", "-a", "--format", "json")
        text = out.strip()
        if not text:
            return []
        if text.startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]


# The docker CLI's own words when the compose v2 plugin is missing, and what we say instead (its
# next line, "See 'docker --help'", would be all a failed call's last line shows).
_NO_PLUGIN = "'compose' is not a docker command"
NO_PLUGIN_REASON = (
    "the docker compose plugin is not installed (docker: 'compose' is not a docker command);"
    " install docker-compose-plugin"
)


def _no_plugin(output: str) -> bool:
    return _NO_PLUGIN in output
