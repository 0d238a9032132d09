"""Config: the typed model (`model`), where it is found (`locate`) and how it is loaded (`load`)."""

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
]
