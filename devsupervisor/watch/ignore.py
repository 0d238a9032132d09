"""Which files under a watched root are build inputs.

A file is watched when it matches the config's `include` globs and none of these exclude it: the
config's `ignore` globs, the `.gitignore` files of the watched tree (root and nested), editor
temp/backup names, anything inside `.git/`, and the paths the build writes itself (`extra_ignored`).
All globs have gitignore semantics via `pathspec`, relative to the watched root.

Like git, a file inside an excluded directory is excluded whatever negations follow, which is
also what lets the watcher skip whole ignored directories when it walks the tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pathspec import GitIgnoreSpec

from devsupervisor.logs.pipeline import get_logger

log = get_logger()

GITIGNORE = ".gitignore"

# Names editors write next to the file being edited. Only names real editors use: a broad rule
# like `*.tmp` could hide a real input, and content hashing already absorbs the rest.
EDITOR_TEMP_NAME = re.compile(
    r"""
    ^\..+\.sw[a-px]$          # vim swap files (.main.go.swp, .swo ... .swa) and the .swx probe
    | ~$                      # vim and emacs backups (main.go~, main.go.~1~)
    | ^\.\#                   # emacs lock files (.#main.go)
    | ^\#.*\#$                # emacs auto-save files (#main.go#)
    | ___jb_(tmp|old)___$     # JetBrains safe-write temp and old copies
    | ^\.goutputstream-       # GLib/gedit atomic replace temp files
    | \.kate-swp$             # Kate swap files
    """,
    re.VERBOSE,
)

# Vim probes whether it may create files in a directory by writing "4913", then 4913 + 123k
# while that name exists (bufwrite.c), and deletes it at once.
VIM_PROBE_FIRST = 4913
VIM_PROBE_STEP = 123


def is_editor_temp(name: str) -> bool:
    """True for a base name that an editor writes while saving or editing."""
    if EDITOR_TEMP_NAME.search(name):
        return True
    if name.isdigit():
        number = int(name)
        return number >= VIM_PROBE_FIRST and (number - VIM_PROBE_FIRST) % VIM_PROBE_STEP == 0
    return False


class PathFilter:
    """Decides whether a path below `root` is a watched build input.

    Args:
        root: the watched directory; relative globs are matched against paths below it.
        include: gitignore-style globs a file must match (`**/*.go`, `go.mod`).
        ignore: gitignore-style globs that exclude files (and whole directories).
        extra_ignored: exact paths never watched; a directory excludes everything below it.

    The `.gitignore` files are read once, here; build a new filter when one of them changes.
    """

    def __init__(
        self,
        root: Path,
        include: Sequence[str],
        ignore: Sequence[str],
        extra_ignored: Sequence[Path] = (),
    ) -> None:
        self.root = root.resolve()
        self._root_str = str(self.root)
        self._include = GitIgnoreSpec.from_lines(include)
        self._ignore = GitIgnoreSpec.from_lines(ignore)
        self._extra = tuple(str(p.resolve()) for p in extra_ignored)
        # Directory (relative parts) -> the spec of the .gitignore in it.
        self._gitignores: dict[tuple[str, ...], GitIgnoreSpec] = {}
        # Relative directory parts -> excluded?; directories are asked about once per file.
        self._dir_cache: dict[tuple[str, ...], bool] = {}
        self._load_gitignores()

    def is_watched(self, path: Path) -> bool:
        """True when `path` (absolute) is a file below the root that should trigger builds."""
        parts = self._relative_parts(path)
        if not parts or self._is_extra(path):
            return False
        if any(self._is_dir_excluded(parts[:depth]) for depth in range(1, len(parts))):
            return False
        name = parts[-1]
        if is_editor_temp(name):
            return False
        rel = "/".join(parts)
        if not self._include.match_file(rel) or self._ignore.match_file(rel):
            return False
        return not self._gitignored(parts, is_dir=False)

    def is_ignored_dir(self, path: Path) -> bool:
        """True when nothing below directory `path` can be watched (the walk may skip it)."""
        parts = self._relative_parts(path)
        if parts is None:
            return True
        if not parts:
            return False
        if self._is_extra(path):
            return True
        return any(self._is_dir_excluded(parts[:depth]) for depth in range(1, len(parts) + 1))

    def walk(self, top: Path | None = None) -> list[Path]:
        """Every watched file below `top` (default: the root), skipping excluded directories."""
        if top is not None and self.is_ignored_dir(top):
            return []
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(top or self._root_str):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not self.is_ignored_dir(here / d)]
            found.extend(here / f for f in filenames if self.is_watched(here / f))
        return found

    # Internals.

    def _relative_parts(self, path: Path) -> tuple[str, ...] | None:
        """Parts of `path` below the root; () for the root itself, None outside it."""
        text = os.path.normpath(path)
        if text == self._root_str:
            return ()
        prefix = self._root_str.rstrip(os.sep) + os.sep
        if not text.startswith(prefix):
            return None
        return tuple(text[len(prefix) :].split(os.sep))

    def _is_extra(self, path: Path) -> bool:
        text = os.path.normpath(path)
        return any(text == extra or text.startswith(extra + os.sep) for extra in self._extra)

    def _is_dir_excluded(self, parts: tuple[str, ...]) -> bool:
        cached = self._dir_cache.get(parts)
        if cached is None:
            cached = (
                parts[-1] == ".git"
                or self._ignore.match_file("/".join(parts) + "/")
                or self._gitignored(parts, is_dir=True)
            )
            self._dir_cache[parts] = cached
        return cached

    def _gitignored(self, parts: tuple[str, ...], *, is_dir: bool) -> bool:
        """Git's rule: every .gitignore from the root down to the path's directory applies, and a
        deeper file's decision (including a `!` negation) overrides a shallower one."""
        decision: bool | None = None
        for depth in range(len(parts)):
            spec = self._gitignores.get(parts[:depth])
            if spec is None:
                continue
            rel = "/".join(parts[depth:]) + ("/" if is_dir else "")
            include = spec.check_file(rel).include
            if include is not None:
                decision = include
        return decision is True

    def _load_gitignores(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self._root_str):
            here = Path(dirpath)
            parts = self._relative_parts(here) or ()
            if GITIGNORE in filenames:
                try:
                    lines = (here / GITIGNORE).read_text(encoding="utf-8", errors="replace")
                except OSError as exc:
                    log.warning(
                        "watch.gitignore_unreadable", path=str(here / GITIGNORE), error=str(exc)
                    )
                else:
                    self._gitignores[parts] = GitIgnoreSpec.from_lines(lines.splitlines())
            # Git reads no .gitignore inside an excluded directory, and neither do we.
            dirnames[:] = [d for d in dirnames if not self.is_ignored_dir(here / d)]
