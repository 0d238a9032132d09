"""Which files under a watched root are build inputs.

A file is watched when it matches the config's `include` globs and none of these exclude it: the
config's `ignore` globs, the `.gitignore` files of the watched tree (root and nested), editor
temp/backup names, anything inside `.git/`, and the paths the build writes itself (`extra_ignored`).
All globs have gitignore semantics via `pathspec`, relative to the watched root.

Like git, a file inside an excluded directory is excluded whatever negations follow, which is
also what lets the watcher skip whole ignored directories when it walks the tree.

`.gitignore` files are read when a path below their directory is first asked about (the walk
goes top-down, so a directory's rules are in before its children are judged): building a filter
costs nothing, and no separate walk of the tree is needed to find them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pathspec import GitIgnoreSpec
from pathspec.pattern import RegexPattern

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.watch.content_index import Listing, signature
from devsupervisor.watch.scan import RACY_WINDOW_NS, UNTRUSTED

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


def _signature(path: str) -> bytes | None:
    """A stat signature (content_index.signature), never trusted when the change is recent
    (see scan.RACY_WINDOW_NS); None when `path` is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_WINDOW_NS:
        return UNTRUSTED
    return signature(st)


def _any_matcher(spec: GitIgnoreSpec) -> re.Pattern[str] | None:
    """One regex for a spec with no negations (then any match includes), else None.

    pathspec tries its patterns one by one; the include globs are asked about every file of
    the tree, and one alternation of their regexes is several times faster.
    """
    parts: list[str] = []
    for pattern in spec.patterns:
        if pattern.include is None:
            continue  # blank line or comment
        if pattern.include is False or not isinstance(pattern, RegexPattern):
            return None
        regex = pattern.regex
        if regex is None:
            continue
        # Each pattern names its directory-marker group the same way; the alternation can't.
        parts.append(re.sub(r"\(\?P<[a-z_]+>", "(?:", regex.pattern))
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else re.compile(r"(?!)")


class _Globs:
    """A gitignore-style spec, with the one-regex fast path when it has no negations."""

    def __init__(self, lines: Sequence[str]) -> None:
        self._spec = GitIgnoreSpec.from_lines(lines)
        self._any = _any_matcher(self._spec)

    def match(self, rel: str) -> bool:
        if self._any is not None:
            return self._any.match(rel) is not None
        return self._spec.match_file(rel)


class PathFilter:
    """Decides whether a path below `root` is a watched build input.

    Args:
        root: the watched directory; relative globs are matched against paths below it.
        include: gitignore-style globs a file must match (`**/*.go`, `go.mod`).
        ignore: gitignore-style globs that exclude files (and whole directories).
        extra_ignored: exact paths never watched; a directory excludes everything below it.
        recursive: False watches only the files directly in `root`.

    Each `.gitignore` is read once, when first needed; build a new filter when one changes.
    """

    def __init__(
        self,
        root: Path,
        include: Sequence[str],
        ignore: Sequence[str],
        extra_ignored: Sequence[Path] = (),
        *,
        recursive: bool = True,
    ) -> None:
        self.root = root.resolve()
        self._root_str = str(self.root)
        self._prefix = self._root_str.rstrip(os.sep) + os.sep
        self._include = _Globs(include)
        self._ignore = _Globs(ignore)
        self._extra = tuple(str(p.resolve()) for p in extra_ignored)
        # The walk meets an extra path only in its parent directory (below it, all is pruned).
        self._extra_set = frozenset(self._extra)
        self._extra_parents = frozenset(os.path.dirname(e) for e in self._extra)
        self._recursive = recursive
        # Directory (relative parts) -> the spec of the .gitignore in it, None when it has none.
        self._gitignores: dict[tuple[str, ...], GitIgnoreSpec | None] = {}
        # Relative directory parts -> excluded?; directories are asked about once per file.
        self._dir_cache: dict[tuple[str, ...], bool] = {}

    def is_watched(self, path: Path | str) -> bool:
        """True when `path` (absolute) is a file below the root that should trigger builds."""
        parts = self._relative_parts(path)
        if not parts or self._is_extra(path):
            return False
        if not self._recursive and len(parts) > 1:
            return False
        if any(self._is_dir_excluded(parts[:depth]) for depth in range(1, len(parts))):
            return False
        return self._is_watched_name(parts)

    def is_ignored_dir(self, path: Path | str) -> bool:
        """True when nothing below directory `path` can be watched (the walk may skip it)."""
        parts = self._relative_parts(path)
        if parts is None:
            return True
        if not parts:
            return False
        if not self._recursive or self._is_extra(path):
            return True
        return any(self._is_dir_excluded(parts[:depth]) for depth in range(1, len(parts) + 1))

    def walk_dirs(self, top: Path | str | None = None) -> Iterator[tuple[str, list[str]]]:
        """(directory, names of its watched files) for `top` (default: the root) and every
        directory below it that is not excluded, parents before children."""
        top_str = os.path.normpath(top) if top is not None else self._root_str
        if self.is_ignored_dir(top_str):
            return
        for dirpath, dirnames, filenames in os.walk(top_str):
            parts = self._relative_parts(dirpath) or ()
            if GITIGNORE not in filenames:
                self._gitignores.setdefault(parts, None)  # the listing says: none here
            extra_here = dirpath in self._extra_parents
            if self._recursive:
                dirnames[:] = [
                    d
                    for d in dirnames
                    if not (extra_here and f"{dirpath}{os.sep}{d}" in self._extra_set)
                    and not self._is_dir_excluded((*parts, d))
                ]
            else:
                dirnames.clear()
            names = self._watched_names(parts, filenames)
            if extra_here:
                names = [n for n in names if f"{dirpath}{os.sep}{n}" not in self._extra_set]
            yield dirpath, names

    def walk_listed(
        self, known: Mapping[str, Listing], listings: dict[str, Listing]
    ) -> Iterator[tuple[str, list[str]]]:
        """`walk_dirs()` from the root, except that a directory whose signature and `.gitignore`
        are those of its listing in `known` is not listed again: its watched names and entered
        subdirectories are taken from there. Records every directory's listing in `listings`.

        A listing stands for the rules it was made under: `known` must come from a walk with the
        same globs and build outputs; a changed `.gitignore` distrusts every listing below it.
        """
        stack = [(self._root_str, True)]
        while stack:
            dirpath, trusted = stack.pop()
            parts = self._relative_parts(dirpath) or ()
            dir_sig = _signature(dirpath)
            if dir_sig is None:
                continue
            rules_sig = _signature(f"{dirpath}{os.sep}{GITIGNORE}") or b""
            old = known.get(dirpath) if trusted else None
            if old is not None and old[0] == dir_sig and old[1] == rules_sig:
                names, subdirs = list(old[2]), old[3]
            else:
                try:
                    names, subdirs = self._list(dirpath, parts)
                except OSError:
                    continue  # gone or unreadable, as os.walk has it
            if not rules_sig:
                self._gitignores.setdefault(parts, None)
            listings[dirpath] = (dir_sig, rules_sig, tuple(names), subdirs)
            yield dirpath, names
            # Rules changed here: what was below may be watched differently now.
            below = trusted and (old is None or old[1] == rules_sig)
            stack.extend((f"{dirpath}{os.sep}{d}", below) for d in reversed(subdirs))

    def _list(self, dirpath: str, parts: tuple[str, ...]) -> tuple[list[str], tuple[str, ...]]:
        """The watched files and the subdirectories to enter of one directory (one listing)."""
        files: list[str] = []
        dirs: list[str] = []
        with os.scandir(dirpath) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                (dirs if is_dir else files).append(entry.name)
        if GITIGNORE not in files:
            self._gitignores.setdefault(parts, None)
        extra_here = dirpath in self._extra_parents
        if self._recursive:
            dirs = [
                d
                for d in dirs
                if not (extra_here and f"{dirpath}{os.sep}{d}" in self._extra_set)
                and not self._is_dir_excluded((*parts, d))
            ]
        else:
            dirs = []
        names = self._watched_names(parts, files)
        if extra_here:
            names = [n for n in names if f"{dirpath}{os.sep}{n}" not in self._extra_set]
        return names, tuple(dirs)

    def _watched_names(self, parts: tuple[str, ...], names: list[str]) -> list[str]:
        """`_is_watched_name` for many files of one directory; the cheapest test (the include
        globs, which most names of a tree fail) first, the directory's share computed once."""
        base = "/".join(parts) + "/" if parts else ""
        rules = [depth for depth in range(len(parts) + 1) if self._gitignore_in(parts[:depth])]
        watched = []
        for name in names:
            rel = base + name
            if not self._include.match(rel) or is_editor_temp(name) or self._ignore.match(rel):
                continue
            if rules and self._gitignored((*parts, name), is_dir=False):
                continue
            watched.append(name)
        return watched

    def walk(self, top: Path | None = None) -> list[Path]:
        """Every watched file below `top` (default: the root), skipping excluded directories."""
        return [Path(d, name) for d, names in self.walk_dirs(top) for name in names]

    # Internals.

    def _is_watched_name(self, parts: tuple[str, ...]) -> bool:
        """The file rules, for a file whose directories are known not to be excluded."""
        if is_editor_temp(parts[-1]):
            return False
        rel = "/".join(parts)
        if not self._include.match(rel) or self._ignore.match(rel):
            return False
        return not self._gitignored(parts, is_dir=False)

    def _relative_parts(self, path: Path | str) -> tuple[str, ...] | None:
        """Parts of `path` below the root; () for the root itself, None outside it."""
        text = os.path.normpath(path)
        if text == self._root_str:
            return ()
        if not text.startswith(self._prefix):
            return None
        return tuple(text[len(self._prefix) :].split(os.sep))

    def _is_extra(self, path: Path | str) -> bool:
        if not self._extra:
            return False
        text = os.path.normpath(path)
        return any(text == extra or text.startswith(extra + os.sep) for extra in self._extra)

    def _is_dir_excluded(self, parts: tuple[str, ...]) -> bool:
        cached = self._dir_cache.get(parts)
        if cached is None:
            cached = (
                parts[-1] == ".git"
                or self._ignore.match("/".join(parts) + "/")
                or self._gitignored(parts, is_dir=True)
            )
            self._dir_cache[parts] = cached
        return cached

    def _gitignored(self, parts: tuple[str, ...], *, is_dir: bool) -> bool:
        """Git's rule: every .gitignore from the root down to the path's directory applies, and a
        deeper file's decision (including a `!` negation) overrides a shallower one."""
        decision: bool | None = None
        for depth in range(len(parts)):
            spec = self._gitignore_in(parts[:depth])
            if spec is None:
                continue
            rel = "/".join(parts[depth:]) + ("/" if is_dir else "")
            include = spec.check_file(rel).include
            if include is not None:
                decision = include
        return decision is True

    def _gitignore_in(self, parts: tuple[str, ...]) -> GitIgnoreSpec | None:
        """The rules of the `.gitignore` in directory `parts`, read on first use."""
        if parts in self._gitignores:
            return self._gitignores[parts]
        path = os.path.join(self._root_str, *parts, GITIGNORE)
        spec: GitIgnoreSpec | None = None
        try:
            with open(path, encoding="utf-8", errors="replace") as source:
                spec = GitIgnoreSpec.from_lines(source.read().splitlines())
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            log.warning("watch.gitignore_unreadable", path=path, error=str(exc))
        self._gitignores[parts] = spec
        return spec
