"""The `project:` and `instance:` of a config file, read without YAML, for client commands.

Client commands only need these names to find the daemon's socket, so they must work on a config
with errors elsewhere (mid-edit) and must start fast: this module reads top-level lines with a
regular expression and imports nothing but `os` and `re` (no YAML, no logging, no asyncio).
"""

from __future__ import annotations

import os
import re

from devsupervisor.config.names import PROJECT_NAME

# Only the head of a huge file is read; these keys sit at the top of any real config.
MAX_READ_BYTES = 256 * 1024

# A top-level `key: name` line, optionally quoted and commented. Indented lines belong to some
# other mapping; a value that is not a valid name (it becomes part of a socket path) is ignored.
_LINE = re.compile(
    rf"""^(project|instance):[ \t]*(["']?)({PROJECT_NAME})\2[ \t]*(?:\#.*)?\r?$""", re.MULTILINE
)


def read_identity(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """`(project, instance)` of the config file at `path`; None for each one not found.

    Never raises: an unreadable file or unusable value gives None.
    """
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_READ_BYTES).decode("utf-8-sig", errors="replace")
    except (OSError, TypeError, ValueError):
        return None, None
    found: dict[str, str] = {}
    for match in _LINE.finditer(text):
        found.setdefault(match.group(1), match.group(3))
    return found.get("project"), found.get("instance")


def read_project_leniently(path: str | os.PathLike[str]) -> str | None:
    """The `project:` of a config file even when the rest of it is invalid (e.g. mid-edit)."""
    return read_identity(path)[0]
