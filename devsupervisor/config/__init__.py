"""Config: the model declared once (`model`), where the file is (`locate`), its names read
leniently without YAML (`identity`), loading (`load`: `yamlmarks`, `convert`, `rules`), the
resolved rendering (`render`), the JSON Schema (`schema`) and port substitution (`ports`).

Names are imported on first use, so importing this package (or `locate`/`identity` through it)
costs no YAML parser: client commands stay fast.
"""

from __future__ import annotations

import importlib

# Not `typing.TYPE_CHECKING`: importing typing alone costs client commands a few milliseconds.
# mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from devsupervisor.config.identity import read_identity, read_project_leniently
    from devsupervisor.config.load import load_config, parse_config
    from devsupervisor.config.locate import find_config
    from devsupervisor.config.model import (
        BackoffConfig,
        BinaryConfig,
        ComposeConfig,
        Config,
        ContainerConfig,
        DashboardConfig,
        DependenciesConfig,
        EngineConfig,
        GiveUpConfig,
        PlatformConfig,
        ReadyCheck,
        StackConfig,
        WatchConfig,
    )
    from devsupervisor.config.ports import substitute_ports
    from devsupervisor.config.render import render_resolved

# Public name -> module that defines it.
_EXPORTS = {
    "read_identity": "identity",
    "read_project_leniently": "identity",
    "load_config": "load",
    "parse_config": "load",
    "find_config": "locate",
    "substitute_ports": "ports",
    "render_resolved": "render",
    **{
        name: "model"
        for name in (
            "BackoffConfig",
            "BinaryConfig",
            "ComposeConfig",
            "Config",
            "ContainerConfig",
            "DashboardConfig",
            "DependenciesConfig",
            "EngineConfig",
            "GiveUpConfig",
            "PlatformConfig",
            "ReadyCheck",
            "StackConfig",
            "WatchConfig",
        )
    },
}

__all__ = [
    "BackoffConfig",
    "BinaryConfig",
    "ComposeConfig",
    "Config",
    "ContainerConfig",
    "DashboardConfig",
    "DependenciesConfig",
    "EngineConfig",
    "GiveUpConfig",
    "PlatformConfig",
    "ReadyCheck",
    "StackConfig",
    "WatchConfig",
    "find_config",
    "load_config",
    "parse_config",
    "read_identity",
    "read_project_leniently",
    "render_resolved",
    "substitute_ports",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"devsupervisor.config.{module}"), name)
