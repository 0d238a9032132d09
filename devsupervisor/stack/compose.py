"""The docker compose CLI, as devsup drives it: one project, layered files, profiles.

Always `docker compose -p PROJECT -f base ... -f stack ... --profile P ... <subcommand>`:
one `-f` per file and global flags before the subcommand (the design's sample got both wrong).
Volumes are never removed: no method here passes `-v`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devsupervisor.errors import ComposeError
from devsupervisor.logs.lines import iter_lines
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.platform.build import BuildResult, run_command

log = get_logger()

# Longest `up --wait` devsup waits for before calling a stack failed; healthchecks with long
# start periods (a real Postgres initialising its volume) need minutes on first start.
UP_TIMEOUT = 300


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

    def shell(self, *subcommand: str) -> str:
        """The same command as one shell line (for run_command and for messages)."""
        return shlex.join(self.argv(*subcommand))


class Compose:
    """Runs compose subcommands for one model; output lines go to `on_line`."""

    def __init__(self, model: ComposeFiles, *, on_line: Callable[[str], None]) -> None:
        self.model = model
        self._on_line = on_line

    @property
    def enabled(self) -> bool:
        """A stack with no compose files runs the platform alone."""
        return bool(self.model.files)

    async def _run(self, *subcommand: str) -> BuildResult:
        cwd = str(self.model.files[0].parent) if self.model.files else os.getcwd()
        log.debug("compose.run", argv=self.model.argv(*subcommand))
        return await run_command(self.model.shell(*subcommand), cwd=cwd, on_line=self._on_line)

    async def _check(self, *subcommand: str) -> BuildResult:
        result = await self._run(*subcommand)
        if not result.ok:
            tail = f": {result.output[-1]}" if result.output else ""
            raise ComposeError(
                f"docker compose {' '.join(subcommand)} failed (exit {result.exit_code}){tail}"
            )
        return result

    async def services(self) -> list[str]:
        """The services this model runs (profiles applied)."""
        proc = await asyncio.create_subprocess_exec(
            *self.model.argv("config", "--services"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise ComposeError(f"docker compose config: {err.decode(errors='replace').strip()}")
        return [line for line in out.decode().splitlines() if line]

    async def up(
        self, services: Sequence[str], *, wait: bool = True, no_deps: bool = False
    ) -> None:
        """Create/start `services` (only what changed is recreated).

        Raises:
            ComposeError: a service did not come up (exit, or unhealthy within --wait).
        """
        args = ["up", "-d"]
        if wait:
            args += ["--wait", "--wait-timeout", str(UP_TIMEOUT)]
        if no_deps:
            args.append("--no-deps")
        await self._check(*args, *services)

    async def stop(self, services: Sequence[str]) -> None:
        if services:
            await self._check("stop", *services)

    async def remove(self, services: Sequence[str]) -> None:
        """Stop and remove the containers of `services` (their volumes stay)."""
        if services:
            await self._check("rm", "--stop", "--force", *services)

    async def build(self, service: str) -> BuildResult:
        return await self._run("build", service)

    async def down(self) -> None:
        """Stop and remove the project's containers and network; volumes are kept."""
        await self._check("down", "--remove-orphans")

    async def logs(self, service: str, lines: int) -> list[str]:
        """The last `lines` log lines of a service's container."""
        proc = await asyncio.create_subprocess_exec(
            *self.model.argv(
                "logs", "--no-color", "--no-log-prefix", "--tail", str(lines), service
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return out.decode(errors="replace").splitlines()

    async def follow_logs(self, service: str, lines: int) -> AsyncIterator[str]:
        """Recent lines, then new ones as the container writes them, until the caller stops."""
        proc = await asyncio.create_subprocess_exec(
            *self.model.argv(
                "logs", "--no-color", "--no-log-prefix", "--follow", "--tail", str(lines), service
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        try:
            # Bounded: a service printing a huge line without a newline is cut, not buffered.
            async for line in iter_lines(proc.stdout):
                yield line
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    async def ps(self) -> list[dict[str, object]]:
        """Containers of the project (all states), as compose reports them."""
        proc = await asyncio.create_subprocess_exec(
            *self.model.argv("ps", "-a", "--format", "json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        text = out.decode().strip()
        if not text:
            return []
        if text.startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
