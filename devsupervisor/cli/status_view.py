"""`devsup status` without --json: the status object as one readable screen.

Every line is escaped (`terminal.escape`) once it is built: its strings come from the daemon,
the screen is for a terminal, and `--json` is there for anything that wants the raw values.
"""

from __future__ import annotations

from devsupervisor.cli.terminal import escape

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from devsupervisor.status_types import BuildInfo, ReloadBreakdown, ServiceStatus, Status

# How many of a build's trigger paths fit on its line, and how much of its error is shown.
TRIGGERS_SHOWN = 3
ERROR_LINES_SHOWN = 8


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _build_lines(build: BuildInfo) -> list[str]:
    verdict = "ok" if build["ok"] else "FAILED"
    triggers = build["trigger"]
    shown = ", ".join(triggers[:TRIGGERS_SHOWN])
    more = " ..." if len(triggers) > TRIGGERS_SHOWN else ""
    lines = [f"  last build {verdict} in {build['duration']:.2f}s ({shown}{more})"]
    if build["error"]:
        tail = build["error"].splitlines()[-ERROR_LINES_SHOWN:]
        lines.extend("    " + line for line in tail)
    return lines


def _reload_line(reload: ReloadBreakdown) -> str:
    phases = (
        ("detect", reload["detect"]),
        ("build", reload["build"]),
        ("stop", reload["stop"]),
        ("start", reload["start"]),
        ("ready", reload["ready"]),
        ("total", reload["total"]),
    )
    return "  last reload " + "  ".join(f"{name} {value * 1000:.0f}ms" for name, value in phases)


def _service_line(service: ServiceStatus) -> str:
    reason = f"  ({service['reason']})" if service["reason"] else ""
    return (
        f"  {service['name']:<14} {service['state']:<10} "
        f"{service['health']:<9} restarts {service['restarts']}{reason}"
    )


def render(status: Status) -> str:
    platform = status["platform"]
    lines = [f"project  {status['project']}   stack {status['stack']} ({status['state']})"]
    # .get: a daemon older than instances sends neither key.
    instance, ports = status.get("instance"), status.get("ports") or {}
    if instance:
        lines.append(f"instance {instance}   {status.get('checkout') or ''}".rstrip())
    if ports:
        lines.append("ports    " + "  ".join(f"{name}={port}" for name, port in ports.items()))
    where = f"pid {platform['pid']}" if platform["pid"] else platform["container"] or "not running"
    lines.append(
        f"platform {platform['state']:<12} {platform['mode']:<9} {where}"
        f"   up {_age(platform['uptime'])}   restarts {platform['restarts']}"
    )
    if platform.get("notify_status"):
        lines.append(f"  says     {platform.get('notify_status')}")
    if platform["last_build"]:
        lines.extend(_build_lines(platform["last_build"]))
    if platform["last_reload"]:
        lines.append(_reload_line(platform["last_reload"]))
    if status["services"]:
        lines.append("services")
        lines.extend(_service_line(service) for service in status["services"])
    watcher = status["watcher"]
    lines.append(
        f"watcher  {'PAUSED' if watcher['paused'] else 'watching'} "
        f"{', '.join(watcher['paths'])}   pending {watcher['pending']}"
    )
    docker = status["docker"]
    if docker["available"]:
        lines.append("docker   available")
    elif docker["error"]:
        lines.append(f"docker   unavailable: {docker['error']}")
    # .get: a daemon older than remote engines sends no `engine`; the default socket goes unsaid.
    engine = status.get("engine")
    if engine and engine["host"] != "unix:///var/run/docker.sock":
        state = "connected" if engine["connected"] else "NOT CONNECTED (retrying)"
        lines.append(f"engine   {engine['host']}   {state}")
    lines.extend(f"engine   ! {warning}" for warning in (engine or {}).get("warnings", []))
    if status["config_error"]:
        lines.append(f"config   ERROR: {status['config_error']}")
    if status["state_error"]:
        lines.append(f"state    ERROR: {status['state_error']}")
    if status["dashboard"]:
        lines.append(f"ui       {status['dashboard']['url']}   (`devsup ui` to log in)")
    daemon = status["daemon"]
    lines.append(
        f"daemon   pid {daemon['pid']}  v{daemon['version']}  up {_age(daemon['uptime'])}"
        f"  log {daemon['log_file']}"
    )
    return "\n".join(escape(line) for line in lines)
