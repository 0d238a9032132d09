"""Load a config file into the typed model, or fail with one line: file, line, key and problem.

Three stages, each stopping at the first problem:
1. YAML text -> plain data plus the position of every key (`yamlmarks`).
2. Structure: types, choices, unknown keys, defaults, all declared in `spec.SPEC`.
3. Rules across keys and against the filesystem (below): paths resolved against the config file's
   directory and required to exist, `default_stack` naming a stack, the platform sections that
   the stacks' modes need, backoff bounds.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from devsupervisor.config.fields import Invalid, KeyPath, did_you_mean, dotted
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
    ReadyKind,
    StackConfig,
    WatchConfig,
)
from devsupervisor.config.spec import READY_KINDS, SPEC
from devsupervisor.config.yamlmarks import Marks, YamlSyntaxError, read_yaml
from devsupervisor.errors import ConfigError


def load_config(path: Path) -> Config:
    """Read, parse and validate the config file at `path`.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or is not a valid config.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the config file: {reason}", file=str(path)) from exc
    try:
        raw, marks = read_yaml(text)
    except YamlSyntaxError as exc:
        line, column = exc.position or (None, None)
        raise ConfigError(exc.problem, file=str(path), line=line, column=column) from None
    except Invalid as exc:
        raise _config_error(exc, path, {}) from None
    return parse_config(raw, path, marks=marks)


def parse_config(raw: object, source: Path, *, marks: Marks | None = None) -> Config:
    """Validate already-parsed YAML data as if it came from the file `source`.

    Relative paths resolve against `source`'s directory. `marks` (from `yamlmarks.read_yaml`)
    adds line numbers to errors.

    Raises:
        ConfigError: the first problem found.
    """
    if raw is None:
        raise ConfigError(
            "the config is empty; it needs at least project, stacks and platform", file=str(source)
        )
    try:
        tree: dict[str, Any] = SPEC.check(raw, ())  # type: ignore[assignment]
        return _build(tree, source)
    except Invalid as exc:
        raise _config_error(exc, source, marks or {}) from None


def _config_error(exc: Invalid, source: Path, marks: Marks) -> ConfigError:
    line, column = exc.position or _nearest_position(exc.path, marks) or (None, None)
    key = dotted(exc.path) or None
    return ConfigError(exc.problem, file=str(source), key=key, line=line, column=column)


def _nearest_position(path: KeyPath, marks: Marks) -> tuple[int, int] | None:
    # A missing key has no position of its own: use the nearest enclosing key that has one.
    for end in range(len(path), 0, -1):
        if (position := marks.get(path[:end])) is not None:
            return position
    return None


def _build(tree: dict[str, Any], source: Path) -> Config:
    source = source.absolute()
    base = source.parent
    stacks = {
        name: StackConfig(
            name=name,
            files=tuple(s["files"]),
            profiles=tuple(s["profiles"]),
            platform=s["platform"],
        )
        for name, s in tree["stacks"].items()
    }
    default_stack = tree["default_stack"] or next(iter(stacks))
    if default_stack not in stacks:
        hint = did_you_mean(default_stack, list(stacks))
        raise Invalid(
            ("default_stack",),
            f"no stack named {default_stack!r}{hint}; stacks: {', '.join(stacks)}",
        )
    return Config(
        project=tree["project"],
        compose=_compose(tree["compose"], stacks, base),
        stacks=stacks,
        default_stack=default_stack,
        platform=_platform(tree["platform"], stacks, base),
        dependencies=_dependencies(tree["dependencies"]),
        on_exit=tree["on_exit"],
        source=source,
    )


def _resolve(base: Path, text: str) -> Path:
    # `~` is expanded as a convenience; everything else is relative to the config file.
    path = Path(text).expanduser()
    return (base / path).resolve()


def _existing(base: Path, text: str, path: KeyPath, *, directory: bool) -> Path:
    resolved = _resolve(base, text)
    if directory and not resolved.is_dir():
        what = "not a directory" if resolved.exists() else "no such directory"
        raise Invalid(path, f"{what}: {resolved}")
    if not directory and not resolved.exists():
        raise Invalid(path, f"no such file or directory: {resolved}")
    return resolved


def _compose(compose: dict[str, Any], stacks: dict[str, StackConfig], base: Path) -> ComposeConfig:
    directory = _resolve(base, compose["directory"])
    uses_compose = bool(compose["files"]) or any(s.files for s in stacks.values())
    # A platform-only setup (no compose files anywhere) needs no compose directory at all.
    if uses_compose:
        directory = _existing(base, compose["directory"], ("compose", "directory"), directory=True)
    for index, name in enumerate(compose["files"]):
        _compose_file(directory, name, ("compose", "files", index))
    for stack in stacks.values():
        for index, name in enumerate(stack.files):
            _compose_file(directory, name, ("stacks", stack.name, "files", index))
    return ComposeConfig(directory=directory, files=tuple(compose["files"]))


def _compose_file(directory: Path, name: str, path: KeyPath) -> None:
    if not (directory / name).is_file():
        raise Invalid(path, f"no such compose file: {directory / name}")


def _platform(
    platform: dict[str, Any], stacks: dict[str, StackConfig], base: Path
) -> PlatformConfig:
    for mode in ("binary", "container"):
        users = [s.name for s in stacks.values() if s.platform == mode]
        if users and platform[mode] is None:
            raise Invalid(
                ("platform", mode),
                f"required because stack {users[0]!r} uses platform: {mode}",
            )
    watch = platform["watch"]
    binary = _binary(platform["binary"], base) if platform["binary"] is not None else None
    container = platform["container"]
    if container is not None and container["prebuild"] is not None and binary is None:
        raise Invalid(
            ("platform", "container", "prebuild"),
            "runs in platform.binary.workdir, so platform.binary is required",
        )
    return PlatformConfig(
        watch=WatchConfig(
            paths=tuple(
                _existing(base, p, ("platform", "watch", "paths", i), directory=False)
                for i, p in enumerate(watch["paths"])
            ),
            include=tuple(watch["include"]),
            ignore=tuple(watch["ignore"]),
            debounce=watch["debounce"],
        ),
        binary=binary,
        container=(
            ContainerConfig(service=container["service"], prebuild=container["prebuild"])
            if container is not None
            else None
        ),
        restart_on=tuple(platform["restart_on"]),
    )


def _binary(binary: dict[str, Any], base: Path) -> BinaryConfig:
    ready = binary["ready"]
    return BinaryConfig(
        workdir=_existing(
            base, binary["workdir"], ("platform", "binary", "workdir"), directory=True
        ),
        build=binary["build"],
        run=binary["run"],
        env=dict(binary["env"]),
        ready=_ready(ready) if ready is not None else None,
        stop_signal=_signal(binary["stop_signal"]),
        stop_timeout=binary["stop_timeout"],
    )


def _ready(ready: dict[str, Any]) -> ReadyCheck:
    # The spec guarantees exactly one kind is present.
    kind: ReadyKind = next(k for k in READY_KINDS if ready[k] is not None)
    return ReadyCheck(kind=kind, target=ready[kind], timeout=ready["timeout"])


def _signal(name: str) -> signal.Signals:
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


def _dependencies(deps: dict[str, Any]) -> DependenciesConfig:
    backoff = deps["backoff"]
    if backoff["initial"] > backoff["max"]:
        raise Invalid(
            ("dependencies", "backoff", "initial"),
            f"must not exceed backoff.max ({backoff['initial']:g} > {backoff['max']:g})",
        )
    give_up = deps["give_up_after"]
    return DependenciesConfig(
        restart_unhealthy=deps["restart_unhealthy"],
        backoff=BackoffConfig(initial=backoff["initial"], max=backoff["max"]),
        give_up_after=GiveUpConfig(restarts=give_up["restarts"], within=give_up["within"]),
    )
