"""Config: the typed model (`model`), where it is found (`locate`), how it is loaded (`load`),
its declared shape (`spec`, from which `schema` derives the JSON Schema) and `render`.
"""

from devsupervisor.config.load import load_config, parse_config
from devsupervisor.config.locate import find_config, read_project_leniently
from devsupervisor.config.model import (
    BackoffConfig,
    BinaryConfig,
    ComposeConfig,
    Config,
    ContainerConfig,
    DependenciesConfig,
    GiveUpConfig,
    PlatformConfig,
    ReadyCheck,
    StackConfig,
    WatchConfig,
)
from devsupervisor.config.render import render_resolved

__all__ = [
    "BackoffConfig",
    "BinaryConfig",
    "ComposeConfig",
    "Config",
    "ContainerConfig",
    "DependenciesConfig",
    "GiveUpConfig",
    "PlatformConfig",
    "ReadyCheck",
    "StackConfig",
    "WatchConfig",
    "find_config",
    "load_config",
    "parse_config",
    "read_project_leniently",
    "render_resolved",
]
