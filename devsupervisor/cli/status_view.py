"""`devsup status` without --json: the status object as one readable screen."""

from __future__ import annotations

from typing import Any


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(status: dict[str, Any]) -> str:
    lines: list[str] = []
    p = status["platform"]
    lines.append(f"project  {status['project']}   stack {status['stack']} ({status['state']})")
    where = f"pid {p['pid']}" if p.get("pid") else (p.get("container") or "not running")
    lines.append(
        f"platform {p['state']:<12} {p['mode']:<9} {where}   up {_age(p.get('uptime'))}"
        f"   restarts {p['restarts']}"
    )
    build = p.get("last_build")
    if build:
        verdict = "ok" if build["ok"] else "FAILED"
        trigger = ", ".join(build["trigger"][:3]) + (" ..." if len(build["trigger"]) > 3 else "")
        lines.append(f"  last build {verdict} in {build['duration']:.2f}s ({trigger})")
        if build.get("error"):
            lines.extend("    " + line for line in build["error"].splitlines()[-8:])
    reload = p.get("last_reload")
    if reload:
        parts = "  ".join(f"{k} {reload[k] * 1000:.0f}ms" for k in reload)
        lines.append(f"  last reload {parts}")
    services = status.get("services") or []
    if services:
        lines.append("services")
        for s in services:
            reason = f"  ({s['reason']})" if s.get("reason") else ""
            lines.append(
                f"  {s['name']:<14} {s['state']:<10} {s['health']:<9} restarts {s['restarts']}"
                f"{reason}"
            )
    w = status["watcher"]
    lines.append(
        f"watcher  {'PAUSED' if w['paused'] else 'watching'} {', '.join(w['paths'])}"
        f"   pending {w['pending']}"
    )
    docker = status["docker"]
    if docker["available"]:
        lines.append("docker   available")
    elif docker.get("error"):
        lines.append(f"docker   unavailable: {docker['error']}")
    if status.get("config_error"):
        lines.append(f"config   ERROR: {status['config_error']}")
    d = status["daemon"]
    lines.append(
        f"daemon   pid {d['pid']}  v{d['version']}  up {_age(d['uptime'])}  log {d['log_file']}"
    )
    return "\n".join(lines)
