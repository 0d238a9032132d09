"""The config, declared once: each key is a field here, with its type, default and description.

`convert` validates raw YAML into these classes by walking their type hints, `render` prints them
back and `schema` derives the JSON Schema from them. Field names are the YAML keys of the contract
and attribute paths follow the file (`config.platform.binary.workdir`). After loading, every path
is absolute (resolved against the config file). Field metadata:
- `doc`: the description in the schema;
- `key`: filled from the mapping key that holds the section (a stack's `name`), not a YAML key;
- `internal`: not a YAML key at all (`source`).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from devsupervisor.config.checks import (
    EngineHost,
    EnvName,
    EnvValue,
    ExistingDir,
    ExistingPath,
    HttpUrl,
    ListenAddress,
    MinItems,
    Port,
    PortRefs,
    PositiveSeconds,
    ProjectName,
    Range,
    RegexText,
    Seconds,
    ServiceName,
    Shell,
    StackName,
    TcpAddress,
)

PlatformMode = Literal["binary", "container"]
OnExit = Literal["keep", "down"]
ReadyKind = Literal["http", "tcp", "log", "notify"]


def doc(text: str, **more: Any) -> dict[str, Any]:
    """Field metadata: the key's description plus any flags (see the module docstring)."""
    return {"doc": text, **more}


@dataclass(frozen=True, kw_only=True)
class ComposeConfig:
    directory: Path = field(
        default=Path("../docker-compose"),
        metadata=doc("Where the compose files are, relative to the config file."),
    )
    files: tuple[str, ...] = field(
        default=("docker-compose.yaml",), metadata=doc("Base compose files, always applied first.")
    )
    # A compose call that hangs (engine wedged, registry prompt) must not stall bring-up forever;
    # `up` of a large stack on a cold cache can take minutes, hence a generous bound.
    timeout: PositiveSeconds = field(
        default=300.0, metadata=doc("Seconds one docker compose call may take before it is killed.")
    )


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    name: str = field(metadata=doc("The stack's key in `stacks`.", key=True))
    files: tuple[str, ...] = field(
        default=(),
        metadata=doc("Compose files added after the base files, relative to compose.directory."),
    )
    profiles: tuple[str, ...] = field(
        default=(), metadata=doc("Compose profiles enabled in this stack.")
    )
    platform: PlatformMode = field(
        default="binary",
        metadata=doc("How the platform runs in this stack: host binary or compose container."),
    )


@dataclass(frozen=True, kw_only=True)
class WatchConfig:
    paths: Annotated[tuple[ExistingPath, ...], MinItems(1, "item(s)")] = field(
        metadata=doc("Source trees to watch, relative to the config file.")
    )
    include: tuple[str, ...] = field(
        default=("**/*.go", "go.mod", "go.sum"),
        metadata=doc("Globs of files whose changes trigger a build."),
    )
    ignore: tuple[str, ...] = field(
        default=("**/*_test.go", "bin/**"),
        metadata=doc("Globs never watched, added to .gitignore rules and editor temp files."),
    )
    debounce: Seconds = field(
        default=0.1,
        metadata=doc("Settle window for changes that keep coming; a lone save builds at once."),
    )


@dataclass(frozen=True, kw_only=True)
class ReadyCheck:
    """How to tell the platform is ready: one of http / tcp / log / notify, and a timeout."""

    ONE_OF: ClassVar[tuple[ReadyKind, ...]] = ("http", "tcp", "log", "notify")

    http: HttpUrl | None = field(default=None, metadata=doc("Ready when this URL answers 2xx."))
    tcp: Annotated[str, TcpAddress(), PortRefs()] | None = field(
        default=None, metadata=doc("Ready when host:port accepts a connection.")
    )
    log: Annotated[str, RegexText(), PortRefs()] | None = field(
        default=None,
        metadata=doc("Ready when a platform output line matches this regular expression."),
    )
    notify: Literal[True] | None = field(
        default=None,
        metadata=doc("Ready when the process sends READY=1 to its NOTIFY_SOCKET (sd_notify)."),
    )
    timeout: PositiveSeconds = field(
        default=30.0,
        metadata=doc("Seconds to wait for readiness before the start counts as failed."),
    )

    @property
    def kind(self) -> ReadyKind:
        return next(k for k in self.ONE_OF if getattr(self, k) is not None)

    @property
    def target(self) -> str:
        """URL for http, host:port for tcp, regex for log; empty for notify."""
        value = getattr(self, self.kind)
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, kw_only=True)
class BinaryConfig:
    workdir: ExistingDir = field(
        metadata=doc("Directory the build and run commands run in, relative to the config file.")
    )
    build: Shell = field(metadata=doc("Shell command (sh -c) that builds the platform binary."))
    run: Shell = field(metadata=doc("Shell command (sh -c) that runs the built platform."))
    env: dict[EnvName, Annotated[str, EnvValue(), PortRefs()]] = field(
        default_factory=dict, metadata=doc("Extra environment for the build and run commands.")
    )
    listen: tuple[Annotated[str, ListenAddress(), PortRefs()], ...] = field(
        default=(),
        metadata=doc(
            "Sockets devsup binds and hands to every platform process (LISTEN_FDS): "
            "HOST:PORT or unix:PATH."
        ),
    )
    ready: ReadyCheck | None = field(
        default=None,
        metadata=doc("Readiness check: exactly one of http, tcp, log or notify, and a timeout."),
    )
    stop_signal: signal.Signals = field(
        default=signal.SIGTERM,
        metadata=doc("Signal sent to the platform's process group to stop it."),
    )
    stop_timeout: Seconds = field(
        default=5.0,
        metadata=doc("Seconds to wait after stop_signal before SIGKILL of the process tree."),
    )


@dataclass(frozen=True, kw_only=True)
class ContainerConfig:
    service: ServiceName = field(
        default="platform", metadata=doc("The compose service that runs the platform.")
    )
    prebuild: str | None = field(
        default=None,
        metadata=doc("Optional host command run in binary.workdir before the image build."),
    )


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    watch: WatchConfig = field(metadata=doc("What source changes rebuild the platform."))
    binary: BinaryConfig | None = field(
        default=None, metadata=doc("The platform as a host binary; needed when a stack uses it.")
    )
    container: ContainerConfig | None = field(
        default=None,
        metadata=doc("The platform as a compose service; needed when a stack uses it."),
    )
    restart_on: tuple[ServiceName, ...] = field(
        default=(), metadata=doc("Compose services whose restart also restarts the platform.")
    )
    # A cold `go build` of a large module takes minutes; one that never ends (a hung generator,
    # a prompt) must still end as build_failed rather than hold the platform in `building`.
    build_timeout: PositiveSeconds = field(
        default=600.0,
        metadata=doc("Seconds a build (and prebuild) may take before it counts as failed."),
    )


@dataclass(frozen=True, kw_only=True)
class BackoffConfig:
    initial: PositiveSeconds = field(default=1.0, metadata=doc("First restart delay in seconds."))
    max: PositiveSeconds = field(default=30.0, metadata=doc("Longest restart delay in seconds."))


@dataclass(frozen=True, kw_only=True)
class GiveUpConfig:
    restarts: Annotated[int, Range(1)] = field(
        default=5, metadata=doc("Restarts within the window after which devsup gives up.")
    )
    within: PositiveSeconds = field(default=300.0, metadata=doc("The window, in seconds."))


@dataclass(frozen=True, kw_only=True)
class DependenciesConfig:
    restart_unhealthy: bool = field(
        default=True, metadata=doc("Restart compose services that die or turn unhealthy.")
    )
    backoff: BackoffConfig = field(
        default=BackoffConfig(),
        metadata=doc("Exponential backoff between restarts of one service."),
    )
    give_up_after: GiveUpConfig = field(
        default=GiveUpConfig(),
        metadata=doc("When to stop restarting a service that keeps failing."),
    )


@dataclass(frozen=True, kw_only=True)
class DashboardConfig:
    port: Annotated[int, Range(0, 65535)] = field(
        default=0, metadata=doc("Port on 127.0.0.1; 0 picks a free one.")
    )


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    host: EngineHost = field(
        metadata=doc("The Docker engine: ssh://USER@HOST[:PORT], unix:///PATH or tcp://HOST:PORT.")
    )


@dataclass(frozen=True, kw_only=True)
class Config:
    project: ProjectName = field(
        metadata=doc("Compose project name; also names the socket and state files.")
    )
    instance: ProjectName | None = field(
        default=None,
        metadata=doc("Name of this checkout's instance; derived from the checkout when absent."),
    )
    compose: ComposeConfig = field(
        default=ComposeConfig(),
        metadata=doc("Where the compose files are and which ones every stack uses."),
    )
    stacks: Annotated[dict[StackName, StackConfig], MinItems(1, "entry")] = field(
        metadata=doc("The stacks devsup can run, by name.")
    )
    # Filled in by the loader (`rules`): the first stack when the file does not name one.
    default_stack: StackName = field(
        default="",
        metadata=doc(
            "Stack started when none is chosen; the first stack when absent.", computed=True
        ),
    )
    platform: PlatformConfig = field(
        metadata=doc("The Go platform devsup builds, runs and watches.")
    )
    dependencies: DependenciesConfig = field(
        default=DependenciesConfig(), metadata=doc("How compose services are kept healthy.")
    )
    on_exit: OnExit = field(
        default="keep",
        metadata=doc("What `devsup run` does to the stack when it stops: keep or down."),
    )
    ports: dict[EnvName, Port] = field(
        default_factory=dict,
        metadata=doc("Host ports every instance gets, by variable name, with their defaults."),
    )
    dashboard: DashboardConfig | Literal[False] = field(
        default=DashboardConfig(),
        metadata=doc("The dashboard on 127.0.0.1, or false to turn it off."),
    )
    engine: EngineConfig | None = field(
        default=None,
        metadata=doc("A Docker engine to use instead of DOCKER_HOST or the current context."),
    )
    # The file this config was loaded from (absolute); None for configs built in code (tests).
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def instance_name(self) -> str:
        """This checkout's instance: `instance` (the daemon resolves it at start, `instance.py`),
        else `project`. It takes the project's place in the compose project name, the socket,
        state and log files."""
        return self.instance or self.project

    def compose_files(self, stack: str) -> tuple[Path, ...]:
        """Base files then the stack's files, absolute, in `-f` order."""
        names = (*self.compose.files, *self.stacks[stack].files)
        return tuple(self.compose.directory / n for n in names)
