"""The status object of the contract (`devsup status --json`, the `status` command, the
dashboard's `/api/status`) as TypedDicts, so mypy checks the producers (platform owner, service
health, daemon) and the readers (CLI screen, dashboard) against one definition.

A leaf module: imports nothing from the package (the CLI reads it without loading the daemon).
"""

from __future__ import annotations

from typing import TypedDict


class BuildInfo(TypedDict):
    ok: bool
    started_at: str
    duration: float
    trigger: list[str]
    error: str | None


class ReloadBreakdown(TypedDict):
    detect: float
    build: float
    stop: float
    start: float
    ready: float
    total: float


class PlatformStatus(TypedDict):
    mode: str
    state: str
    pid: int | None
    container: str | None
    uptime: float | None
    restarts: int
    last_build: BuildInfo | None
    last_reload: ReloadBreakdown | None
    # What the process last said with `STATUS=` (sd_notify), when it uses notify readiness.
    notify_status: str | None


class ServiceStatus(TypedDict):
    name: str
    state: str
    health: str
    restarts: int
    container: str | None
    since: str
    reason: str | None


class WatcherStatus(TypedDict):
    paused: bool
    paths: list[str]
    pending: int


class DockerStatus(TypedDict):
    available: bool
    error: str | None


class EngineStatus(TypedDict):
    host: str
    connected: bool
    warnings: list[str]  # bind mounts of this machine's paths, ports that could not forward


class DaemonStatus(TypedDict):
    pid: int
    version: str
    uptime: float
    socket: str
    log_file: str


class DashboardStatus(TypedDict):
    url: str


class Status(TypedDict):
    project: str
    instance: str  # this checkout's instance (the contract, "Instances")
    checkout: str  # the config file's absolute path
    ports: dict[str, int]  # NAME -> the host port this instance was given
    stack: str
    state: str
    platform: PlatformStatus
    services: list[ServiceStatus]
    watcher: WatcherStatus
    docker: DockerStatus
    engine: EngineStatus
    config_error: str | None
    # Why the state file could not be written (devsup goes on without it), else None.
    state_error: str | None
    dashboard: DashboardStatus | None
    daemon: DaemonStatus
