"""The internal failure of a check (`Invalid`) and the words used to describe bad values.

`load.py` turns `Invalid` into the public `ConfigError`, adding the file name and the line.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

KeyPath = tuple[str | int, ...]

# Longer values are cut in messages so an error stays one readable line.
MAX_SHOWN_CHARS = 40


class Invalid(Exception):
    """A value failed a check at `path`."""

    def __init__(
        self, path: KeyPath, problem: str, position: tuple[int, int] | None = None
    ) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem
        # (line, column) when the raiser knows it better than the key path does.
        self.position = position


def dotted(path: KeyPath) -> str:
    """`("stacks", "full", "files", 1)` -> `stacks.full.files[1]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def describe(value: object) -> str:
    """A short rendering of a YAML value for messages, in YAML's own words where they differ."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= MAX_SHOWN_CHARS else value[:MAX_SHOWN_CHARS] + "..."
        return repr(shown)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
