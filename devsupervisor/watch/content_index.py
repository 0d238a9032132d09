"""The content index: for every watched file, its stat signature and its content hash.

One entry is a 48-byte string (size, mtime_ns, ctime_ns, inode, 16-byte digest), kept per
directory (`{directory: {name: entry}}`), so a file costs its name and one small bytes object
instead of a `Path` and a tuple: about 180 bytes per file.

The signature lets a later scan trust an entry without reading the file: a write always moves
ctime (which no user call can set back), so an unchanged signature means unchanged bytes.
That is what makes the index worth persisting: the daemon saves it in its state directory, and
the next start hashes only the files whose signature changed meanwhile.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from devsupervisor.watch.content_hash import DIGEST_SIZE

# size, mtime_ns, ctime_ns, inode: what must be equal for an entry to stand without a read.
SIGNATURE = struct.Struct("<QqqQ")
ENTRY_SIZE = SIGNATURE.size + DIGEST_SIZE
# Bumped when the entry layout changes; marshal's format also follows the Python version.
FORMAT = f"devsup-index-1 py{sys.version_info[0]}.{sys.version_info[1]}"


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

    def __init__(self, dirs: dict[str, dict[str, bytes]] | None = None) -> None:
        self._dirs: dict[str, dict[str, bytes]] = dirs if dirs is not None else {}

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

    # Persistence: marshal is C-fast both ways and allocates nothing beyond the index itself.

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename). Raises OSError."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as out:
                marshal.dump((FORMAT, self._dirs), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> ContentIndex:
        """The saved index, or an empty one when it is missing, foreign or damaged."""
        try:
            with path.open("rb") as source:
                loaded = marshal.load(source)
        except (OSError, EOFError, ValueError, TypeError):
            return cls()
        if not (isinstance(loaded, tuple) and len(loaded) == 2 and loaded[0] == FORMAT):
            return cls()
        dirs = loaded[1]
        if not isinstance(dirs, dict) or not all(
            isinstance(d, str) and isinstance(names, dict) for d, names in dirs.items()
        ):
            return cls()
        for names in dirs.values():
            for name, entry in list(names.items()):
                if not (isinstance(entry, bytes) and len(entry) == ENTRY_SIZE):
                    del names[name]
        return cls(dirs)
