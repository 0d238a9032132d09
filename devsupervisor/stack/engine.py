"""Which Docker engine devsup talks to, resolved the way the docker CLI resolves it.

Precedence (the contract, "Remote engine"): the config's `engine.host`; else DOCKER_HOST; else the
current docker context (DOCKER_CONTEXT, else `currentContext` in the CLI's config.json), read from
the context store as `docker context inspect` would; else the default local socket. Reading the
store directly costs a file read, where `docker context inspect` costs a process start.

An `ssh://` address is not handed to docker (its ssh helper opens a new connection per call);
devsup carries it over one connection of its own (`stack.ssh_tunnel`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devsupervisor.errors import ConfigError

# What the docker CLI uses with no DOCKER_HOST and no context.
DEFAULT_HOST = "unix:///var/run/docker.sock"
# The context that stands for "DOCKER_HOST or the default socket" in the docker CLI.
DEFAULT_CONTEXT = "default"


@dataclass(frozen=True)
class SshDestination:
    """`ssh://[USER@]HOST[:PORT]` split into what the ssh command line takes."""

    host: str
    user: str | None = None
    port: int | None = None

    def args(self) -> list[str]:
        """Destination arguments for `ssh` (user and port only when given: ssh config applies)."""
        args: list[str] = []
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.user:
            args += ["-l", self.user]
        return [*args, self.host]

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{self.host}{port}"


@dataclass(frozen=True)
class EngineAddress:
    """The engine devsup uses and where that choice came from (for status and messages)."""

    host: str
    source: str  # "config", "DOCKER_HOST", "context NAME" or "default"

    @property
    def ssh(self) -> SshDestination | None:
        """The ssh destination when the engine is reached over ssh, else None."""
        return parse_ssh(self.host) if self.host.startswith("ssh://") else None


def parse_ssh(url: str) -> SshDestination:
    """Split an `ssh://` engine address.

    Raises:
        ConfigError: not `ssh://[USER@]HOST[:PORT]` (docker rejects a path there too).
    """
    parts = urlsplit(url)
    problem = None
    if parts.scheme != "ssh" or not parts.hostname:
        problem = "expected ssh://USER@HOST[:PORT]"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "no path, query or fragment after the host"
    elif parts.password is not None:
        problem = "no password in the address (use a key or the ssh agent)"
    if problem is None:
        try:
            port = parts.port
        except ValueError:
            problem = "the port must be a number from 1 to 65535"
    if problem is not None:
        raise ConfigError(f"engine address {url!r}: {problem}")
    return SshDestination(host=parts.hostname or "", user=parts.username or None, port=port)


def resolve(
    configured: str | None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> EngineAddress:
    """The engine to use: the config's, else DOCKER_HOST, else the current context, else default.

    Args:
        configured: `engine.host` from the config, None when the key is absent.
        env: the environment to read (default: this process's).
        home: the user's home, where `.docker` is when DOCKER_CONFIG is unset.
    """
    env = os.environ if env is None else env
    if configured:
        return EngineAddress(configured, "config")
    if env.get("DOCKER_HOST"):
        return EngineAddress(env["DOCKER_HOST"], "DOCKER_HOST")
    config_dir = _config_dir(env, home)
    name = env.get("DOCKER_CONTEXT") or _current_context(config_dir)
    if name and name != DEFAULT_CONTEXT:
        host = context_host(name, config_dir)
        if host:
            return EngineAddress(host, f"context {name}")
    return EngineAddress(DEFAULT_HOST, "default")


def context_host(name: str, config_dir: Path) -> str | None:
    """The docker endpoint of context `name` in the CLI's context store, None when unknown."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest / "meta.json"
    try:
        data = json.loads(meta.read_text())
        host = data["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return host if isinstance(host, str) and host else None


def _config_dir(env: Mapping[str, str], home: Path | None) -> Path:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return (home or Path.home()) / ".docker"


def _current_context(config_dir: Path) -> str | None:
    try:
        data = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = data.get("currentContext") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None
