"""The first index of the watched files, and the persisted copy it starts from.

Start before indexing: `SourceWatcher.start()` returns at once; the indexer thread puts the
inotify watches in place and then builds the index, so the first build waits for neither. Nor
does the index compete with that build for the CPU: it is built only once someone needs it
(`fingerprint()`, which the orchestrator asks for once a build succeeded or to decide whether one
is needed; `wait_indexed()`, `rescan()`, `index_now()`), or `index_delay` after the start at the
latest. The index is persisted (`index_path`) and an entry whose stat signature is unchanged is
reused without a read, so a restart hashes only what changed while the daemon was away. No change
made from `start()` on is lost, however late the index comes: a change after the watches are in
place has an event, and one for a file the indexer has not read yet counts as a change (its old
content is unknown); a file the indexer finds changed after `start()` (before its watch existed,
or with its event still in flight) is reported by the indexer itself.

Threads: the indexer thread sets up the watches and builds the first index. It takes the
watcher's lock per directory, never while it reads files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.watch import scan
from devsupervisor.watch.content_index import ContentIndex

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from devsupervisor.watch.ignore import PathFilter
    from devsupervisor.watch.root_poller import RootPoller

log = get_logger()

# Linux's CLOCK_REALTIME_COARSE (not named in `time`): the clock file timestamps are taken from
# (or a finer one, never earlier). A change made after a reading of it has a ctime >= that
# reading; a change up to one tick (1-10 ms) before it may too, and counts as a change.
CLOCK_REALTIME_COARSE = 5
INDEXER_THREAD = "devsup-index"
# How long the first index waits for someone to ask for it: a first build normally asks sooner
# (its fingerprint is stored once it succeeds); one that fails or outlasts this shares the CPU
# with the indexer from then on. Until then every event counts as a change, nothing is lost.
INDEX_DELAY = 3.0


def file_clock_ns() -> int:
    """Now, on the clock file timestamps are taken from."""
    try:
        return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
    except OSError:
        return time.time_ns()


class IndexBuilder:
    """The indexer thread's part of `SourceWatcher` (a mixin: the state is the watcher's)."""

    if TYPE_CHECKING:
        # Set up by SourceWatcher.__init__ / start().
        _roots: tuple[Path, ...]
        _rules: str
        _nested: bool
        _hasher: scan.Hasher
        _index_path: Path | None
        _index_delay: float
        _observer: BaseObserver | None
        _poller: RootPoller
        _lock: threading.Lock
        _filters: tuple[PathFilter, ...]
        _index: ContentIndex
        _indexing: bool
        _touched: set[str]
        _indexed: threading.Event
        _index_wanted: threading.Event
        _stopping: threading.Event
        _started_ns: int

        def _try_watch(self, root: Path) -> BaseException | None: ...
        def _is_watched(self, path: str) -> bool: ...
        def _report(self, changed: Iterable[str | Path]) -> None: ...

    # Indexer thread.

    def _watch_and_index(self) -> None:
        started = time.monotonic()
        observer = self._observer
        try:
            assert observer is not None
            observer.start()
        except Exception as exc:
            # Without watches no change is seen; the index still serves fingerprint().
            log.error("watch.failed", roots=[str(r) for r in self._roots], error=str(exc))
        else:
            # Root by root, once the observer runs: a root that cannot be watched (missing,
            # watch limit) is polled by the RootPoller; the others are watched as usual.
            for root in self._roots:
                if (error := self._try_watch(root)) is not None:
                    self._poller.add(root, error)
            log.info(
                "watch.started",
                roots=[str(r) for r in self._roots],
                duration=round(time.monotonic() - started, 3),
            )
        # Not while the first build runs, unless that build's decision waits for the index.
        if not self._index_wanted.wait(self._index_delay) and self._index_delay > 0:
            log.info("watch.index_due", delay=self._index_delay)
        # Not niced: a fingerprint (a restart deciding whether to build) waits for this, and
        # an unprivileged process cannot raise the priority back once it has lowered it.
        self._build_index()

    def _build_index(self) -> None:
        if self._stopping.is_set():
            self._indexed.set()  # stopped before its turn: nobody may wait for it
            return
        started = time.monotonic()
        saved = ContentIndex.load(self._index_path) if self._index_path else ContentIndex()
        known = saved.listings if saved.rules == self._rules else {}
        since = self._started_ns
        hashed = 0
        try:
            for root_filter in self._filters:
                walk = root_filter.walk_listed(known, self._index.listings)
                while not self._stopping.is_set():
                    with self._lock:  # the filter's caches are shared with the observer
                        step = next(walk, None)
                    if step is None:
                        break
                    hashed += self._index_directory(*step, saved, since)
        except Exception:
            log.exception("watch.index_failed")
        with self._lock:
            stopped = self._stopping.is_set()
            self._indexing = stopped  # a half-built index stays "being built"
            self._touched.clear()
            count = len(self._index)
        self._indexed.set()
        if stopped:
            return
        listed = sum(known.get(d) != listing for d, listing in self._index.listings.items())
        log.info(
            "watch.indexed",
            files=count,
            hashed=hashed,
            reused=count - hashed,
            dirs=len(self._index.listings),
            listed=listed,
            duration=round(time.monotonic() - started, 3),
        )
        self._save_index()

    def _index_directory(
        self, directory: str, names: list[str], saved: ContentIndex, since: int
    ) -> int:
        """Index the watched files of one directory; returns how many were read."""
        known = saved.take(directory)
        fresh: dict[str, bytes] = {}
        late: list[str] = []
        hashed = 0
        for name in names:
            path = f"{directory}{os.sep}{name}"
            entry, changed_ns = scan.entry_for(path, known.get(name), hasher=self._hasher)
            if entry is None:
                continue
            hashed += entry is not known.get(name)
            fresh[name] = entry
            if changed_ns >= since:
                late.append(path)
        with self._lock:
            for name in list(fresh):
                path = f"{directory}{os.sep}{name}"
                if path in self._touched or (self._nested and not self._is_watched(path)):
                    del fresh[name]
            self._index.put_names(directory, fresh)
            late = [p for p in late if p not in self._touched]
        self._report(late)
        return hashed

    def _save_index(self) -> None:
        if self._index_path is None:
            return
        try:
            with self._lock:
                self._index.save(self._index_path)
        except OSError as exc:
            # A cache: without it the next start hashes everything, nothing worse.
            log.warning("watch.index_unsaved", path=str(self._index_path), error=str(exc))
