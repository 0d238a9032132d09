"""Rules across keys and against the filesystem, checked after the structure (`convert`).

Each rule raises `Invalid` with the key path it is about; the loader adds file and line.
"""

from __future__ import annotations

import dataclasses
import re

from devsupervisor.config.invalid import Invalid, KeyPath, did_you_mean
from devsupervisor.config.model import Config, PlatformConfig
from devsupervisor.config.names import PORT_REF


def apply_rules(config: Config) -> Config:
    """`config` with the computed `default_stack` filled in.

    Raises:
        Invalid: the first rule broken.
    """
    stacks = list(config.stacks)
    default_stack = config.default_stack or stacks[0]
    if default_stack not in config.stacks:
        hint = did_you_mean(default_stack, stacks)
        raise Invalid(
            ("default_stack",),
            f"no stack named {default_stack!r}{hint}; stacks: {', '.join(stacks)}",
        )
    _check_compose(config)
    _check_platform(config)
    _check_port_refs(config)
    backoff = config.dependencies.backoff
    if backoff.initial > backoff.max:
        raise Invalid(
            ("dependencies", "backoff", "initial"),
            f"must not exceed backoff.max ({backoff.initial:g} > {backoff.max:g})",
        )
    return dataclasses.replace(config, default_stack=default_stack)


def _check_compose(config: Config) -> None:
    directory = config.compose.directory
    uses_compose = bool(config.compose.files) or any(s.files for s in config.stacks.values())
    # A platform-only setup (no compose files anywhere) needs no compose directory at all.
    if uses_compose and not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise Invalid(("compose", "directory"), f"{what}: {directory}")
    for index, name in enumerate(config.compose.files):
        _compose_file(config, name, ("compose", "files", index))
    for stack in config.stacks.values():
        for index, name in enumerate(stack.files):
            _compose_file(config, name, ("stacks", stack.name, "files", index))


def _compose_file(config: Config, name: str, path: KeyPath) -> None:
    if not (config.compose.directory / name).is_file():
        raise Invalid(path, f"no such compose file: {config.compose.directory / name}")


def _check_platform(config: Config) -> None:
    platform: PlatformConfig = config.platform
    for mode in ("binary", "container"):
        users = [s.name for s in config.stacks.values() if s.platform == mode]
        if users and getattr(platform, mode) is None:
            raise Invalid(
                ("platform", mode), f"required because stack {users[0]!r} uses platform: {mode}"
            )
    container = platform.container
    if container is not None and container.prebuild is not None and platform.binary is None:
        raise Invalid(
            ("platform", "container", "prebuild"),
            "runs in platform.binary.workdir, so platform.binary is required",
        )


def _check_port_refs(config: Config) -> None:
    # Readiness targets and listen addresses never pass through a shell: a `${NAME}` there that
    # no port declares would stay as written and can never work.
    binary = config.platform.binary
    if binary is None:
        return
    places: list[tuple[KeyPath, str]] = [
        (("platform", "binary", "listen", i), a) for i, a in enumerate(binary.listen)
    ]
    if binary.ready is not None and binary.ready.kind != "notify":
        places.append((("platform", "binary", "ready", binary.ready.kind), binary.ready.target))
    for path, text in places:
        for name in re.findall(PORT_REF, text):
            if name not in config.ports:
                hint = did_you_mean(name, list(config.ports))
                raise Invalid(path, f"${{{name}}} is not a port of the ports section{hint}")
