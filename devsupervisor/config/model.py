"""The typed, frozen config model. Every path is absolute (resolved against the config file).

The loader (`config.load`) validates raw YAML into these; nothing else constructs them from
untrusted input. Field names follow the YAML keys of PRODUCT.md exactly.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PlatformMode = Literal["binary", "container"]
OnExit = Literal["keep", "down"]
ReadyKind = Literal["http", "tcp", "log"]


@dataclass(frozen=True)
class ComposeConfig:
    directory: Path
    files: tuple[str, ...] = ("docker-compose.yaml",)


@dataclass(frozen=True)
class StackConfig:
    name: str
    files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    platform: PlatformMode = "binary"


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[Path, ...]
    include: tuple[str, ...] = ("**/*.go", "go.mod", "go.sum")
    ignore: tuple[str, ...] = ("**/*_test.go", "bin/**")
    debounce: float = 0.1


@dataclass(frozen=True)
class ReadyCheck:
    """How to tell the platform is ready: exactly one of http / tcp / log, plus a timeout."""

    kind: ReadyKind
    target: str  # URL for http, host:port for tcp, regex for log
    timeout: float = 30.0


@dataclass(frozen=True)
class BinaryConfig:
    workdir: Path
    build: str
    run: str
    env: dict[str, str] = field(default_factory=dict)
    ready: ReadyCheck | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 5.0


@dataclass(frozen=True)
class ContainerConfig:
    service: str = "platform"
    prebuild: str | None = None


@dataclass(frozen=True)
class PlatformConfig:
    watch: WatchConfig
    binary: BinaryConfig | None = None
    container: ContainerConfig | None = None
    # Compose services whose restart also restarts the platform (issue: dependency health).
    restart_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackoffConfig:
    initial: float = 1.0
    max: float = 30.0


@dataclass(frozen=True)
class GiveUpConfig:
    restarts: int = 5
    within: float = 300.0


@dataclass(frozen=True)
class DependenciesConfig:
    restart_unhealthy: bool = True
    backoff: BackoffConfig = BackoffConfig()
    give_up_after: GiveUpConfig = GiveUpConfig()


@dataclass(frozen=True)
class Config:
    project: str
    compose: ComposeConfig
    stacks: dict[str, StackConfig]
    default_stack: str
    platform: PlatformConfig
    dependencies: DependenciesConfig = DependenciesConfig()
    on_exit: OnExit = "keep"
    # The file this config was loaded from (absolute); None for configs built in code (tests).
    source: Path | None = None

    def stack(self, name: str) -> StackConfig:
        return self.stacks[name]

    def compose_files(self, stack: str) -> tuple[Path, ...]:
        """Base files then the stack's files, absolute, in `-f` order."""
        names = (*self.compose.files, *self.stacks[stack].files)
        return tuple(self.compose.directory / n for n in names)
