"""Where the config file is: the precedence of the contract, written down in this one place.

1. `--config PATH`
2. `$DEVSUP_CONFIG`
3. `./devsup.yaml`
4. `./config/devsup.yaml`
5. `$XDG_CONFIG_HOME/devsup/devsup.yaml` (`~/.config` when unset)

A path the user named (1 or 2) that does not exist is an error rather than a reason to look further:
silently running some other config would be worse than stopping.

Imports neither YAML nor the loader: client commands use it to find the config and then read only
its names (`identity`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from devsupervisor.errors import ConfigNotFound

ENV_VAR = "DEVSUP_CONFIG"
FILE_NAME = "devsup.yaml"


def candidates(
    explicit: str | None, cwd: Path, environ: Mapping[str, str]
) -> list[tuple[str, Path]]:
    """Every place looked, in order, each with the reason it is looked at."""
    if explicit:
        return [("--config", cwd / Path(explicit).expanduser())]
    if environ.get(ENV_VAR):
        return [(f"${ENV_VAR}", cwd / Path(environ[ENV_VAR]).expanduser())]
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [
        ("./", cwd / FILE_NAME),
        ("./config/", cwd / "config" / FILE_NAME),
        ("$XDG_CONFIG_HOME", Path(xdg) / "devsup" / FILE_NAME),
    ]


def find_config(
    explicit: str | None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The config file to use, as an absolute path.

    Args:
        explicit: the `--config` argument, if given.
        cwd: directory relative names are taken from (default: the process's).
        environ: environment to read `DEVSUP_CONFIG` and `XDG_CONFIG_HOME` from (default: os's).

    Raises:
        ConfigNotFound: nothing at any of the places looked; the message lists them.
    """
    cwd = (cwd or Path.cwd()).absolute()
    places = candidates(explicit, cwd, os.environ if environ is None else environ)
    for _, path in places:
        if path.is_file():
            return path
    if len(places) == 1:
        origin, path = places[0]
        raise ConfigNotFound(f"no config file at {path} (from {origin})", file=str(path))
    looked = ", ".join(str(path) for _, path in places)
    raise ConfigNotFound(
        f"no config file found; looked for --config (not given), ${ENV_VAR} (not set), {looked}"
    )
