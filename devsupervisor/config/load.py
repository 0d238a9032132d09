"""Load a config file into the typed model, or fail with one line: file, line, key and problem.

Three stages, each stopping at the first problem:
1. Bytes -> YAML data plus the position of every key (`yamlmarks`), within size, depth and
   alias-expansion limits.
2. Structure: types, choices, unknown keys, defaults, all declared by the model (`convert`).
3. Rules across keys and against the filesystem (`rules`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from devsupervisor.config.convert import Converter
from devsupervisor.config.invalid import Invalid, KeyPath, dotted
from devsupervisor.config.model import Config
from devsupervisor.config.rules import apply_rules
from devsupervisor.config.yamlmarks import Marks, YamlSyntaxError, read_yaml
from devsupervisor.errors import ConfigError

# A hand-written config is a few KiB. 256 KiB is ample and keeps the pure-Python YAML parser
# under about 0.15 s on a file of that size; anything larger is refused before parsing.
MAX_CONFIG_BYTES = 256 * 1024


def load_config(path: Path) -> Config:
    """Read, parse and validate the config file at `path`.

    Raises:
        ConfigError: the file cannot be read, is too large, is not YAML, or is not a valid config.
    """
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the config file: {reason}", file=str(path)) from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"the config file is larger than {MAX_CONFIG_BYTES // 1024} KiB (size limit)",
            file=str(path),
        )
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
    source = source.absolute()
    try:
        config: Config = Converter(source.parent).section(Config, raw, ())
        return apply_rules(dataclasses.replace(config, source=source))
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
