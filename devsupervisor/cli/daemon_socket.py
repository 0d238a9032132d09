"""Which daemon a client command talks to (the contract, "Client commands" and "Instances").

In this order: `--instance NAME` (`--project` is its alias); else the instance of the config
found as `run` finds it, read leniently and without YAML (`config.identity`), so a config with
errors elsewhere never cuts a client off: its `instance:`, else derived as `run` derives it
(`instance.derive`: the project, or `<project>-<slug>` in a linked git worktree); else the only
socket in the socket directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from devsupervisor import paths
from devsupervisor.errors import ConfigError, DaemonNotRunning, UsageError

# The rule instance and project names follow (config.names.PROJECT_NAME, kept in step with it
# here so that this module does not import the config package); the name becomes a file name.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def socket_for(instance: str | None, config: str | None) -> Path:
    """The control socket of the daemon a client command means.

    Raises:
        UsageError: `instance` is not a valid instance name.
        DaemonNotRunning: no name found and not exactly one socket to fall back on.
        SocketPathTooLong: the socket path cannot be used with AF_UNIX.
    """
    if instance is not None:
        if not _NAME.fullmatch(instance):
            raise UsageError(
                f"--instance {instance!r}: not an instance name (lowercase letters, digits, "
                "'-' and '_', starting with a letter or digit)"
            )
        return paths.socket_path(instance)
    name = name_from_config(config)
    if name is not None:
        return paths.socket_path(name)
    only = paths.find_only_socket()
    if only is not None:
        return only
    raise DaemonNotRunning(
        f"no devsup daemon found (no config with a project: key, no socket in "
        f"{paths.socket_dir()}); start one with `devsup run` or `devsup service install`"
    )


def name_from_config(config: str | None) -> str | None:
    """The instance name the config found as `run` finds it gives, or None."""
    # Imported here: `--instance` alone needs neither module.
    from devsupervisor.config.identity import read_identity
    from devsupervisor.config.locate import find_config

    try:
        found = find_config(config)
    except ConfigError:
        return None
    project, instance = read_identity(found)
    if instance is not None or project is None:
        return instance
    from devsupervisor.instances.naming import derive

    return derive(project, found)  # a linked worktree's config reaches its own daemon
