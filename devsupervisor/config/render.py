"""The fully resolved config as YAML (absolute paths, every default filled), for `config check`.

The output is itself a valid config that loads back into an equal `Config`, so what
`devsup config check` prints is exactly what the daemon would run.
"""

from __future__ import annotations

from typing import Any

import yaml

from devsupervisor.config.model import BinaryConfig, Config, PlatformConfig


def render_resolved(config: Config) -> str:
    """YAML of `config` with nothing left implicit, preceded by a comment naming its source."""
    header = f"# resolved from {config.source}\n" if config.source else ""
    return header + yaml.safe_dump(resolved_data(config), sort_keys=False, width=100)


def resolved_data(config: Config) -> dict[str, Any]:
    """`config` as plain data with the keys of the config file."""
    deps = config.dependencies
    return {
        "project": config.project,
        "compose": {
            "directory": str(config.compose.directory),
            "files": list(config.compose.files),
        },
        "stacks": {
            name: {
                "files": list(stack.files),
                "profiles": list(stack.profiles),
                "platform": stack.platform,
            }
            for name, stack in config.stacks.items()
        },
        "default_stack": config.default_stack,
        "platform": _platform(config.platform),
        "dependencies": {
            "restart_unhealthy": deps.restart_unhealthy,
            "backoff": {"initial": deps.backoff.initial, "max": deps.backoff.max},
            "give_up_after": {
                "restarts": deps.give_up_after.restarts,
                "within": deps.give_up_after.within,
            },
        },
        "on_exit": config.on_exit,
    }


def _platform(platform: PlatformConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "watch": {
            "paths": [str(p) for p in platform.watch.paths],
            "include": list(platform.watch.include),
            "ignore": list(platform.watch.ignore),
            "debounce": platform.watch.debounce,
        }
    }
    # Absent optional sections stay absent: `null` would not load back.
    if platform.binary is not None:
        out["binary"] = _binary(platform.binary)
    if platform.container is not None:
        container: dict[str, Any] = {"service": platform.container.service}
        if platform.container.prebuild is not None:
            container["prebuild"] = platform.container.prebuild
        out["container"] = container
    out["restart_on"] = list(platform.restart_on)
    return out


def _binary(binary: BinaryConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workdir": str(binary.workdir),
        "build": binary.build,
        "run": binary.run,
        "env": dict(binary.env),
    }
    if binary.ready is not None:
        out["ready"] = {binary.ready.kind: binary.ready.target, "timeout": binary.ready.timeout}
    out["stop_signal"] = binary.stop_signal.name
    out["stop_timeout"] = binary.stop_timeout
    return out
