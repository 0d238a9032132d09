"""Content hashes of source files, and one fingerprint over a whole snapshot of them.

`watch.SourceWatcher` compares these hashes to tell a real change from a touch or a rewrite with
the same bytes; the fingerprint says whether two snapshots hold the same sources.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

# Read size for hashing; source files are small, this bounds memory for the odd large one.
HASH_CHUNK = 1 << 16
# 16-byte blake2b: collisions are irrelevant at source-tree sizes and it hashes fast.
DIGEST_SIZE = 16


def hash_file(path: Path) -> bytes | None:
    """Content hash of a regular file, or None when it is missing, unreadable or not a file."""
    try:
        # O_NONBLOCK so a FIFO that appears under a watched name cannot block the watcher.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
        while chunk := os.read(fd, HASH_CHUNK):
            digest.update(chunk)
        return digest.digest()
    except OSError:
        return None
    finally:
        os.close(fd)


def fingerprint(snapshot: Mapping[Path, bytes]) -> str:
    """A hash over all paths of `snapshot` and their content hashes: equal means same sources."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for path in sorted(snapshot):
        digest.update(os.fsencode(path) + b"\0" + snapshot[path])
    return digest.hexdigest()
