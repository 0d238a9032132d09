"""The content index: for every watched file, its stat signature and its content hash.

One entry is a 48-byte string (size, mtime_ns, ctime_ns, inode, 16-byte digest), kept per
directory (`{directory: {name: entry}}`), so a file costs its name and one small bytes object
instead of a `Path` and a tuple: about 180 bytes per file.

The signature lets a later scan trust an entry without reading the file: a write always moves
ctime (which no user call can set back), so an unchanged signature means unchanged bytes.
That is what makes the index worth persisting: the daemon saves it in its state directory, and
the next start hashes only the files whose signature changed meanwhile. Directory listings are
saved with it (`Listing`): a directory whose own signature and `.gitignore` are unchanged has the
same entries, so the next start need not list it and match its names against the globs again.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

from devsupervisor.watch.content_hash import DIGEST_SIZE

# size, mtime_ns, ctime_ns, inode: what must be equal for an entry to stand without a read.
SIGNATURE = struct.Struct("<QqqQ")
ENTRY_SIZE = SIGNATURE.size + DIGEST_SIZE
# Bumped when the layout changes; marshal's format also follows the Python version.
FORMAT = f"devsup-index-2 py{sys.version_info[0]}.{sys.version_info[1]}"

# A directory as the walk found it: its signature, its .gitignore's (b"" for none), the names of
# its watched files and of the subdirectories the walk entered.
Listing = tuple[bytes, bytes, tuple[str, ...], tuple[str, ...]]


def signature(st: os.stat_result) -> bytes:
    """The stat part of an entry."""
    return SIGNATURE.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def digest_of(entry: bytes) -> bytes:
    return entry[SIGNATURE.size :]


def split(path: str) -> tuple[str, str]:
    directory, _, name = path.rpartition(os.sep)
    return directory or os.sep, name


class ContentIndex:
    """Entries by directory and name. Not thread-safe: the watcher's lock guards it."""

    def __init__(
        self,
        dirs: dict[str, dict[str, bytes]] | None = None,
        *,
        rules: str = "",
        listings: dict[str, Listing] | None = None,
    ) -> None:
        self._dirs: dict[str, dict[str, bytes]] = dirs if dirs is not None else {}
        # What decided which files are watched (globs, build outputs) when `listings` were made.
        self.rules = rules
        self.listings: dict[str, Listing] = listings if listings is not None else {}

    def __len__(self) -> int:
        return sum(len(names) for names in self._dirs.values())

    def get(self, path: str) -> bytes | None:
        directory, name = split(path)
        names = self._dirs.get(directory)
        return names.get(name) if names is not None else None

    def digest(self, path: str) -> bytes | None:
        entry = self.get(path)
        return digest_of(entry) if entry is not None else None

    def put(self, path: str, entry: bytes) -> None:
        directory, name = split(path)
        names = self._dirs.get(directory)
        if names is None:
            # One string object per directory, shared by every lookup that interns it.
            names = self._dirs[sys.intern(directory)] = {}
        names[name] = entry

    def put_names(self, directory: str, entries: dict[str, bytes]) -> None:
        """Add entries of one directory, keyed by the caller's name strings (the walk's own:
        one string per name in memory, shared with the directory's listing)."""
        if not entries:
            return
        names = self._dirs.get(directory)
        if names is None:
            names = self._dirs[sys.intern(directory)] = {}
        names.update(entries)

    def discard(self, path: str) -> None:
        directory, name = split(path)
        names = self._dirs.get(directory)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._dirs[directory]

    def directory(self, directory: str) -> dict[str, bytes]:
        """The entries of one directory (a copy: name -> entry)."""
        return dict(self._dirs.get(directory, {}))

    def take(self, directory: str) -> dict[str, bytes]:
        """Remove and return the entries of one directory (name -> entry): moving entries from
        a loaded index into the live one keeps one copy of each in memory, not two."""
        return self._dirs.pop(directory, {})

    def below(self, directory: str) -> list[str]:
        """Paths of every entry in `directory` or under it."""
        prefix = directory.rstrip(os.sep) + os.sep
        return [
            f"{d}{os.sep}{name}"
            for d, names in self._dirs.items()
            if d == directory or d.startswith(prefix)
            for name in names
        ]

    def paths(self) -> Iterator[str]:
        for directory, names in self._dirs.items():
            for name in names:
                yield f"{directory}{os.sep}{name}"

    def fingerprint(self) -> str:
        """A hash over all paths and their content hashes: equal means same sources."""
        digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
        for directory in sorted(self._dirs):
            names = self._dirs[directory]
            for name in sorted(names):
                path = f"{directory}{os.sep}{name}"
                digest.update(os.fsencode(path) + b"\0" + digest_of(names[name]))
        return digest.hexdigest()

    # Persistence: marshal is C-fast both ways; one record per directory keeps the buffers of a
    # save or a load small (one marshal of the whole index would double the peak RSS of a save).

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename). Raises OSError."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            # 0600 like the state file beside it: it names every source file of the project.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as out:
                marshal.dump((FORMAT, self.rules), out)
                for directory in self._dirs.keys() | self.listings.keys():
                    record = (
                        directory,
                        self._dirs.get(directory, {}),
                        self.listings.get(directory),
                    )
                    marshal.dump(record, out)
                marshal.dump(None, out)  # the end: a file without it was cut short
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> ContentIndex:
        """The saved index, or an empty one when it is missing, foreign or damaged."""
        dirs: dict[str, dict[str, bytes]] = {}
        listings: dict[str, Listing] = {}
        try:
            with path.open("rb") as source:
                header = marshal.load(source)
                if not (isinstance(header, tuple) and header[:1] == (FORMAT,)):
                    return cls()
                rules = header[1]
                while (record := marshal.load(source)) is not None:
                    directory, names, listing = record
                    if not isinstance(directory, str):
                        return cls()
                    entries = {
                        name: entry
                        for name, entry in names.items()
                        if isinstance(name, str)
                        and isinstance(entry, bytes)
                        and len(entry) == ENTRY_SIZE
                    }
                    if entries:
                        dirs[sys.intern(directory)] = entries
                    if _is_listing(listing):
                        listings[directory] = listing
        except Exception:  # a cache: whatever is wrong with it, start without it
            return cls()
        return cls(dirs, rules=str(rules), listings=listings)


def _is_listing(value: object) -> TypeGuard[Listing]:
    return (
        isinstance(value, tuple)
        and len(value) == 4
        and all(isinstance(part, bytes) for part in value[:2])
        and all(isinstance(part, tuple) for part in value[2:])
        and all(isinstance(name, str) for name in (*value[2], *value[3]))
    )
