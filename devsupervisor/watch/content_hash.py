"""Content hashes of source files.

`watch.SourceWatcher` compares these hashes to tell a real change from a touch or a rewrite with
the same bytes (`content_index` keeps them, with the fingerprint over all of them).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Read size for hashing; source files are small, this bounds memory for the odd large one.
HASH_CHUNK = 1 << 16
# 16-byte blake2b: collisions are irrelevant at source-tree sizes and it hashes fast.
DIGEST_SIZE = 16


def hash_file(path: str | Path) -> bytes | None:
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
