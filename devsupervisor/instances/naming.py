"""Which instance a checkout is (the contract, "Instances: several checkouts at once").

An instance is one checkout of a project: `--instance NAME` on `run`, else the config's
`instance:`, else derived from where the config file is: the project name in a primary checkout,
`<project>-<slug>` in a linked git worktree. The instance name takes the project's place in the
compose project name, the socket, state and log files, and the systemd unit.

Light on purpose (only `os` and `re`): client commands derive the name of the daemon to reach
from the config found in the current directory, and must start fast. A linked worktree is told
from its `.git` file alone, without running git.
"""

from __future__ import annotations

import os
import re

from devsupervisor.errors import UsageError

# The slug is part of socket paths (107-byte limit) and container names: short keeps them usable.
SLUG_MAX = 24
# A worktree directory whose name has no letter or digit still needs a name of its own.
EMPTY_SLUG = "worktree"
# Reading more than this of a `.git` file is reading something that is not one.
GIT_FILE_MAX = 4096

_OUTSIDE = re.compile(r"[^a-z0-9]+")
# config.names.PROJECT_NAME: the instance name becomes file names and the compose project name.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def slug(directory_name: str) -> str:
    """The worktree directory's name lowercased, each run of characters outside `[a-z0-9]` one
    `-`, at most SLUG_MAX characters; a `-` left at either end is dropped (it would only double
    the separator)."""
    text = _OUTSIDE.sub("-", directory_name.lower())[:SLUG_MAX].strip("-")
    return text or EMPTY_SLUG


def linked_worktree(start: str | os.PathLike[str]) -> str | None:
    """The root directory of the linked git worktree holding `start`, or None when `start` is in
    a primary checkout (its `.git` is a directory), a submodule, or no git checkout at all.

    A linked worktree's `.git` is a file `gitdir: <main>/.git/worktrees/<name>`; a submodule's
    points into `.git/modules/` instead. Never raises.
    """
    directory = os.path.abspath(start)
    while True:
        dot_git = os.path.join(directory, ".git")
        if os.path.isdir(dot_git):
            return None
        if os.path.isfile(dot_git):
            return directory if _points_into_worktrees(dot_git, directory) else None
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _points_into_worktrees(dot_git: str, directory: str) -> bool:
    try:
        with open(dot_git, "rb") as file:
            text = file.read(GIT_FILE_MAX).decode("utf-8", errors="replace")
    except OSError:
        return False
    first = text.splitlines()[0] if text else ""
    if not first.startswith("gitdir:"):
        return False
    gitdir = os.path.normpath(os.path.join(directory, first[len("gitdir:") :].strip()))
    return os.path.basename(os.path.dirname(gitdir)) == "worktrees"


def derive(project: str, config_file: str | os.PathLike[str] | None) -> str:
    """The instance name of a checkout whose config is `config_file` and names no instance."""
    if config_file is None:
        return project
    root = linked_worktree(os.path.dirname(os.path.abspath(config_file)))
    if root is None:
        return project
    return f"{project}-{slug(os.path.basename(root))}"


def resolve(
    project: str,
    configured: str | None,
    config_file: str | os.PathLike[str] | None,
    override: str | None = None,
) -> str:
    """`override` (`--instance`), else `configured` (the config's `instance:`), else derived.

    Raises:
        UsageError: `override` is not a valid instance name.
    """
    if override is not None and not _NAME.fullmatch(override):
        raise UsageError(
            f"--instance {override!r}: not an instance name (lowercase letters, digits, "
            "'-' and '_', starting with a letter or digit)"
        )
    return override or configured or derive(project, config_file)
