"""Change detection: which watched source files really changed content.

`SourceWatcher` keeps a content index of the watched files (see `ignore.PathFilter` for which
files, `content_index` for the entries) and reports to the event loop the paths whose bytes
differ from it. Its parts live by thread: `events` (the observer thread: which events count,
hashing a file once it is complete, the settle timer) and `indexer` (the indexer thread: the
watches, then the first index, built late and from the persisted copy, without losing a change
made from `start()` on); this module holds the state they share, the public API and the hand-off
to the loop.

Threads: the observer thread handles events; the indexer thread sets up the watches and builds
the first index; a timer thread settles deferred paths; `rescan()` may run in any thread. One
lock guards the index and the filters; the indexer takes it per directory, never while it reads
files. Changes reach the event loop only through `loop.call_soon_threadsafe`; paths reported
while the loop is busy are merged into one batch.

Budget: one observer (`inotify_observer.OverflowAwareObserver`), so one inotify instance, and one
recursive watch per root. When the kernel's event queue overflows, the observer queues a
`QueueOverflowEvent` and the watcher answers with a full rescan, so no change is lost.

A root inotify cannot cover (missing when its watch is set up, deleted while watched, or past the
inotify watch limit) is handed to a `RootPoller`: it waits for a missing root to come back and
polls a root past the limit, and the watcher rescans, so its changes are still reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from watchdog.observers.api import BaseObserver, ObservedWatch

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.watch import scan
from devsupervisor.watch.content_hash import hash_file
from devsupervisor.watch.content_index import ContentIndex
from devsupervisor.watch.events import WATCHED_EVENTS, DispatchHandler, EventHandling
from devsupervisor.watch.ignore import PathFilter
from devsupervisor.watch.indexer import INDEX_DELAY, INDEXER_THREAD, IndexBuilder, file_clock_ns
from devsupervisor.watch.inotify_observer import OverflowAwareObserver
from devsupervisor.watch.root_poller import RootPoller

__all__ = [
    "INDEXER_THREAD",
    "INDEX_DELAY",
    "ChangeCallback",
    "OverflowAwareObserver",
    "SourceWatcher",
    "file_clock_ns",
]

log = get_logger()

ChangeCallback = Callable[[frozenset[Path]], None]


class SourceWatcher(IndexBuilder, EventHandling):
    """Reports content changes of the watched files below `roots` to the event loop.

    Args:
        roots: directories to watch (recursively unless `recursive` is False).
        include / ignore: gitignore-style globs relative to each root (see `PathFilter`).
        on_change: called on the loop thread with the paths whose content changed.
        loop: the event loop that owns all state.
        extra_ignored: paths the build writes (never reported).
        observer_factory: makes the watchdog observer; a seam for tests.
        index_path: where the index is kept between runs (None: not kept).
        recursive: False watches only the files directly in each root.
        hasher: reads a file's content hash; a seam for tests.
        index_delay: seconds the first index waits for someone to ask for it (see INDEX_DELAY;
            0 builds it at once).
    """

    def __init__(
        self,
        roots: Sequence[Path],
        include: Sequence[str],
        ignore: Sequence[str],
        *,
        on_change: ChangeCallback,
        loop: asyncio.AbstractEventLoop,
        extra_ignored: Sequence[Path] = (),
        observer_factory: Callable[[], BaseObserver] = OverflowAwareObserver,
        index_path: Path | None = None,
        recursive: bool = True,
        hasher: scan.Hasher = hash_file,
        index_delay: float = INDEX_DELAY,
    ) -> None:
        self._roots = tuple(dict.fromkeys(root.resolve() for root in roots))
        self._include = tuple(include)
        self._ignore = tuple(ignore)
        self._extra = tuple(extra_ignored)
        self._on_change = on_change
        self._loop = loop
        self._observer_factory = observer_factory
        self._index_path = index_path
        self._recursive = recursive
        self._hasher = hasher
        self._index_delay = index_delay
        # What decides which files are watched: a saved listing made under other rules is stale.
        self._rules = repr((self._include, self._ignore, sorted(map(str, self._extra)), recursive))
        # Nested roots: the deepest root's filter has the last word on each file.
        self._nested = any(a != b and a.is_relative_to(b) for a in self._roots for b in self._roots)
        self._observer: BaseObserver | None = None
        self._handler = DispatchHandler(self._handle_event)
        # Root -> its inotify watch. Its own lock: the observer's dispatch thread holds the
        # observer's lock while it calls us, and (un)scheduling takes that lock too.
        self._watch_lock = threading.Lock()
        self._watches: dict[Path, ObservedWatch] = {}
        self._poller = RootPoller(try_watch=self._try_watch, rescan=self._poll_rescan)
        # Guards _filters, _index, _indexing, _touched and _unsettled.
        self._lock = threading.Lock()
        self._filters: tuple[PathFilter, ...] = ()
        self._index = ContentIndex(rules=self._rules)
        # While the first index is built: paths whose entry an event has settled already.
        self._indexing = False
        self._touched: set[str] = set()
        self._indexed = threading.Event()
        # Set when someone needs the index (or the watcher stops): the indexer waits for it.
        self._index_wanted = threading.Event()
        self._stopping = threading.Event()
        self._indexer: threading.Thread | None = None
        self._started_ns = 0
        # Paths to look at again once their grace ends (path -> monotonic deadline).
        self._unsettled: dict[str, float] = {}
        self._settle_timer: threading.Timer | None = None
        # Changes waiting for the loop; at most one flush is scheduled at a time.
        self._pending_lock = threading.Lock()
        self._pending: set[str] = set()
        self._flush_scheduled = False

    @property
    def paths(self) -> tuple[Path, ...]:
        """The watched roots (resolved)."""
        return self._roots

    @property
    def watched_count(self) -> int:
        """How many files are in the index (so far, while it is being built)."""
        with self._lock:
            return len(self._index)

    @property
    def indexed(self) -> bool:
        """True once the first index is complete."""
        return self._indexed.is_set()

    @property
    def observer(self) -> BaseObserver | None:
        """The running observer (for status and tests), None before `start()`."""
        return self._observer

    def start(self) -> None:
        """Start watching; returns at once. A thread puts the watches in place, then builds the
        index: neither delays the first build (see `indexer` for why nothing is lost).
        """
        # A build can only start after this returns: what changes from now on, it may not see.
        self._started_ns = file_clock_ns()
        with self._lock:
            self._filters = self._make_filters()
            self._indexing = True
        self._observer = self._observer_factory()
        self._indexer = threading.Thread(
            target=self._watch_and_index, name=INDEXER_THREAD, daemon=True
        )
        self._indexer.start()

    def index_now(self) -> None:
        """Build the first index now rather than after `index_delay` (thread-safe)."""
        self._index_wanted.set()

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Block (a thread, never the loop) until the first index is complete; asks for it."""
        self.index_now()
        return self._indexed.wait(timeout)

    def stop(self) -> None:
        """Stop the observer and the indexer, and save the index. It stays for `fingerprint()`."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        self._stopping.set()
        self._index_wanted.set()  # an indexer still waiting for its turn ends at once
        if self._indexer is not None:
            self._indexer.join()  # it checks _stopping between directories
        self._poller.stop()
        observer.stop()
        if observer.is_alive():
            observer.join()
        with self._lock:
            timer, self._settle_timer = self._settle_timer, None
            complete = not self._indexing
        if timer is not None:
            timer.cancel()
        if complete:
            self._save_index()
        self._indexed.set()  # nobody may wait forever on an index that stopped half-way
        log.info("watch.stopped", roots=[str(r) for r in self._roots])

    def rescan(self) -> frozenset[Path]:
        """Re-read the `.gitignore` rules, walk the roots, update the index and return the paths
        whose content differs (a file whose stat signature is unchanged is not read again).
        Thread-safe (never on the loop: it waits for the first index); no `on_change` call."""
        self.wait_indexed()
        started = time.monotonic()
        with self._lock:
            self._filters = self._make_filters()
            old = self._index
            # The listings of the first walk stay: any change since moved a directory's
            # signature, so the next start lists it again.
            current = ContentIndex(rules=self._rules, listings=old.listings)
            for path_filter in self._filters:
                for directory, names in path_filter.walk_dirs():
                    known = old.directory(directory)
                    for name in names:
                        path = f"{directory}{os.sep}{name}"
                        if self._nested and not self._is_watched(path):
                            continue
                        entry, _ = scan.entry_for(path, known.get(name), hasher=self._hasher)
                        if entry is not None:
                            current.put(path, entry)
            self._unsettled.clear()  # a rescan settles everything
            changed = {
                p for p in (*old.paths(), *current.paths()) if old.digest(p) != current.digest(p)
            }
            self._index = current
            count = len(current)
        log.info(
            "watch.rescanned",
            changed=len(changed),
            files=count,
            duration=round(time.monotonic() - started, 3),
        )
        return frozenset(Path(p) for p in changed)

    async def fingerprint(self) -> str:
        """A hash over all watched paths and their content hashes: equal means same sources.
        Asks for the first index and waits for it, without blocking the loop."""
        self.index_now()
        if not self._indexed.is_set():
            await asyncio.to_thread(self._indexed.wait)
        return await asyncio.to_thread(self._fingerprint_now)

    def _fingerprint_now(self) -> str:
        with self._lock:
            return self._index.fingerprint()

    def _try_watch(self, root: Path) -> BaseException | None:
        """Watch `root` with inotify, replacing a watch that ended; the error, or None."""
        observer = self._observer
        if observer is None:
            return None  # stopping: nothing to watch for
        with self._watch_lock:
            old = self._watches.pop(root, None)
            if old is not None:
                with contextlib.suppress(KeyError):  # already gone with its emitter
                    observer.unschedule(old)
            try:
                self._watches[root] = observer.schedule(
                    self._handler, str(root), recursive=self._recursive, event_filter=WATCHED_EVENTS
                )
            except OSError as exc:
                return exc
        return None

    def _poll_rescan(self) -> None:
        self._report(self.rescan())

    def _report(self, changed: Iterable[str | Path]) -> None:
        batch = {str(p) for p in changed}
        if not batch:
            return
        with self._pending_lock:
            self._pending.update(batch)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:
            # The loop is closed: the daemon is shutting down and nobody is left to tell.
            log.debug("watch.loop_closed", dropped=len(batch))

    # Loop thread.

    def _flush(self) -> None:
        with self._pending_lock:
            batch = frozenset(Path(p) for p in self._pending)
            self._pending.clear()
            self._flush_scheduled = False
        if batch:
            self._on_change(batch)

    # Helpers (lock held).

    def _make_filters(self) -> tuple[PathFilter, ...]:
        return tuple(
            PathFilter(r, self._include, self._ignore, self._extra, recursive=self._recursive)
            for r in self._roots
        )

    def _filter_for(self, path: str) -> PathFilter | None:
        # The deepest root wins when roots nest.
        owners = [f for f in self._filters if path == str(f.root) or path.startswith(f"{f.root}/")]
        return max(owners, key=lambda f: len(f.root.parts), default=None)

    def _is_watched(self, path: str) -> bool:
        path_filter = self._filter_for(path)
        return path_filter is not None and path_filter.is_watched(path)

    def _walk_below(self, directory: str) -> list[str]:
        path_filter = self._filter_for(directory)
        if path_filter is None:
            return []
        # With nested roots the deepest root's filter has the last word on each file.
        return [
            path
            for d, names in path_filter.walk_dirs(directory)
            for path in (f"{d}{os.sep}{n}" for n in names)
            if not self._nested or self._is_watched(path)
        ]
