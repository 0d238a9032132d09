"""The fully resolved config as YAML (absolute paths, every default filled), for `config check`.

The output is itself a valid config that loads back into an equal `Config`, so what
`devsup config check` prints is exactly what the daemon would run.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml

from devsupervisor.config.model import Config
from devsupervisor.config.walk import to_data


def render_resolved(config: Config) -> str:
    """YAML of `config` with nothing left implicit, preceded by a comment naming its source."""
    header = f"# resolved from {config.source}\n" if config.source else ""
    return header + yaml.safe_dump(resolved_data(config), sort_keys=False, width=100)


def resolved_data(config: Config) -> dict[str, Any]:
    """`config` as plain data with the keys of the config file."""
    return typing.cast(dict[str, Any], to_data(config))
