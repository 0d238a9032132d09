"""Index entries for files: reuse a known entry when the file's stat signature vouches for it,
hash the file otherwise.

A signature is only trusted when the file was last modified well before it was hashed. Within
one tick of the kernel's coarse file clock two writes of the same size leave the same mtime and
ctime (git's "racy clean" problem), so an entry hashed that soon after a write gets a signature
that never matches, and the next scan hashes the file again.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

from devsupervisor.watch.content_hash import hash_file
from devsupervisor.watch.content_index import SIGNATURE, signature

# A write this recent (ns) when a file is hashed makes its entry racy. Coarse file timestamps
# lag the real clock by a few ms; a second leaves room for filesystems with coarser clocks.
RACY_WINDOW_NS = 1_000_000_000
# A signature no stat produces (negative size).
UNTRUSTED = SIGNATURE.pack(0, -1, -1, 0)


Hasher = Callable[[str], bytes | None]


def entry_for(
    path: str, known: bytes | None, *, trust: bool = True, hasher: Hasher = hash_file
) -> tuple[bytes | None, int]:
    """The entry of the regular file at `path` and its latest change time (ns).

    Args:
        path: absolute path.
        known: the entry the index holds for it, if any; reused when `trust` and its signature
            equals the file's.
        trust: False always hashes (an event says the file was just written).
        hasher: reads the content hash (`content_hash.hash_file`; a seam for tests).

    Returns (None, 0) when the file is missing, unreadable or not a regular file.
    """
    before = None
    if trust and known is not None:
        before = _stat(path)
        if before is None:
            return None, 0
        if known[: SIGNATURE.size] == signature(before):
            return known, _changed_ns(before)
    # Nothing to compare with: the file is read without a stat first (a first index reads
    # every file, and that stat was a fifth of its time). The stat after the read vouches for
    # the entry: a change during the read leaves a ctime at most one file clock tick before
    # `reading`, so that entry is racy (never trusted), and the change's time is reported with
    # it (the watcher compares it with its start).
    reading = time.time_ns()
    digest = hasher(path)
    after = _stat(path) if digest is not None else None
    if digest is None or after is None:
        return None, 0
    changed_ns = _changed_ns(after)
    sig = signature(after)
    moved = before is not None and signature(before) != sig
    if moved or reading - changed_ns < RACY_WINDOW_NS:
        sig = UNTRUSTED
    return sig + digest, changed_ns


def _stat(path: str) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _changed_ns(st: os.stat_result) -> int:
    return max(st.st_mtime_ns, st.st_ctime_ns)
