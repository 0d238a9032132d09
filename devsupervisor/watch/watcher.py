"""Change detection: which watched source files really changed content.

`SourceWatcher` keeps a content index of the watched files (see `ignore.PathFilter` for which
files, `content_index` for the entries). The watchdog observer thread re-hashes the files an
event names and reports only paths whose bytes differ from the index (appeared and disappeared
files included), so a touch, a same-content rewrite or a checkout that restores the same bytes
reports nothing.

Start before indexing: `start()` returns at once; a thread puts the inotify watches in place and
then builds the index, so the first build waits for neither. Nor does the index compete with that
build for the CPU: it is built only once someone needs it (`fingerprint()`, which the orchestrator
asks for once a build succeeded or to decide whether one is needed; `wait_indexed()`,
`rescan()`, `index_now()`), or `index_delay` after the start at the latest. The index is
persisted (`index_path`) and an entry whose stat signature is unchanged is reused without a
read, so a restart hashes only what changed while the daemon was away. No change made from
`start()` on is lost, however late the index comes: a change after the watches are in place has
an event, and one for a file the indexer has not read yet counts as a change (its old content is
unknown); a file the indexer finds changed after `start()` (before its watch existed, or with
its event still in flight) is reported by the indexer itself.

A file is hashed when it is complete: when its writer closes it, or when it is renamed into place
(an atomic rename save reports the file once, with its final content). A file that is created,
deleted or renamed away may be in the middle of a rewrite (git checkout unlinks and recreates,
some editors rename the old copy away first), so it waits for its close event, or at most
SETTLE_GRACE, before it is looked at.

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
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.watch import scan
from devsupervisor.watch.content_hash import hash_file
from devsupervisor.watch.content_index import ContentIndex, digest_of
from devsupervisor.watch.ignore import GITIGNORE, PathFilter
from devsupervisor.watch.inotify_observer import (
    OverflowAwareObserver,
    QueueOverflowEvent,
    WatchLimitEvent,
)
from devsupervisor.watch.root_poller import RootPoller

log = get_logger()

ChangeCallback = Callable[[frozenset[Path]], None]

# Event kinds after which a file's bytes or existence may differ. A write is taken as finished
# when the writer closes the file (closed = IN_CLOSE_WRITE): hashing on each IN_MODIFY would see
# the truncated half of an in-place save and report a same-content rewrite as two changes.
# Writes that never close (truncate(2) by path, mmap) are picked up by the next event or rescan.
# Left out as well: opened/closed-no-write (our own hashing reads would feed the queue) and
# attrib (a touch changes no content).
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

# How long a vanished or just-created file may take to settle before it is looked at again:
# git checkout unlinks and recreates within microseconds, editors' rename dances within
# milliseconds; only deletions and files that appear without a close wait this long.
SETTLE_GRACE = 0.05
# Linux's CLOCK_REALTIME_COARSE (not named in `time`): the clock file timestamps are taken from
# (or a finer one, never earlier). A change made after a reading of it has a ctime >= that
# reading; a change up to one tick (1-10 ms) before it may too, and counts as a change.
CLOCK_REALTIME_COARSE = 5
INDEXER_THREAD = "devsup-index"
# How long the first index waits for someone to ask for it: a first build normally asks sooner
# (its fingerprint is stored once it succeeds); one that fails or outlasts this shares the CPU
# with the indexer from then on. Until then every event counts as a change, nothing is lost.
INDEX_DELAY = 3.0
# Stands for "content unknown" while the index is built: equal to no digest.
UNKNOWN = b"?"


def file_clock_ns() -> int:
    """Now, on the clock file timestamps are taken from."""
    try:
        return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
    except OSError:
        return time.time_ns()


class _Handler(FileSystemEventHandler):
    def __init__(self, handle: Callable[[FileSystemEvent], None]) -> None:
        self._handle = handle

    def dispatch(self, event: FileSystemEvent) -> None:
        self._handle(event)


class SourceWatcher:
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
        self._handler = _Handler(self._handle_event)
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
        index: neither delays the first build (see the module docstring for why nothing is lost).
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

    # Observer thread.

    def _handle_event(self, event: FileSystemEvent) -> None:
        # An exception here would end the observer thread and silently stop all watching.
        try:
            if isinstance(event, QueueOverflowEvent):
                log.warning("watch.overflow", root=os.fsdecode(event.src_path))
                self._report(self.rescan())
                return
            if isinstance(event, WatchLimitEvent):
                root = Path(os.fsdecode(event.src_path))
                self._poller.add(root, OSError(errno.ENOSPC, "inotify watch limit reached"))
                self._report(self.rescan())
                return
            if isinstance(event, DirDeletedEvent) and Path(os.fsdecode(event.src_path)) in (
                self._roots
            ):
                # Its inotify watch ended with it: wait for it to come back.
                self._poller.add(Path(os.fsdecode(event.src_path)), "the directory was deleted")
            self._report(self._rehash_for(event))
        except Exception:
            log.exception("watch.error", fs_event=repr(event))
            try:
                self._report(self.rescan())
            except Exception:
                log.exception("watch.rescan_failed")

    def _rehash_for(self, event: FileSystemEvent) -> set[str]:
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        src, dest = paths[0], (paths[1] if len(paths) > 1 else None)
        if not event.is_directory and any(os.path.basename(p) == GITIGNORE for p in paths):
            # New rules change what is watched: rescan, but only with the file complete.
            complete = dest or (src if isinstance(event, FileClosedEvent) else None)
            if complete is not None and os.path.basename(complete) == GITIGNORE:
                log.info("watch.gitignore_changed", path=complete)
                return {str(p) for p in self.rescan()}
            with self._lock:
                self._defer({p for p in paths if os.path.basename(p) == GITIGNORE})
            return set()
        with self._lock:
            # Hash now only what is complete now: a file just closed after writing, or renamed
            # into place. What was created, deleted or renamed away may be mid-rewrite (git
            # checkout unlinks and recreates; some editors rename the old file away first), so
            # it waits for its close event or for the settle timer.
            arrived: set[str] = set()
            unsettled: set[str] = set()
            gone: set[str] = set()
            if isinstance(event, DirCreatedEvent):
                unsettled.update(self._walk_below(src))
            elif event.is_directory:  # deleted or moved: what we knew below it, where it went
                unsettled.update(self._index.below(src))
                if self._indexing and self._filter_for(src) is not None:
                    gone.add(src)  # files below it the indexer had not reached yet
                if dest is not None:
                    arrived.update(self._walk_below(dest))
            elif isinstance(event, FileCreatedEvent | FileDeletedEvent):
                unsettled.add(src)
            elif dest is not None:  # moved
                unsettled.add(src)
                arrived.add(dest)
            else:  # closed after writing
                arrived.add(src)
            arrived = {p for p in arrived if self._is_watched(p)}
            self._defer({p for p in unsettled - arrived if self._is_watched(p)})
            return self._update(arrived) | gone

    def _update(self, candidates: Iterable[str], *, final: bool = False) -> set[str]:
        """Rehash `candidates` (lock held) and return those whose content changed.

        A file found missing is not reported yet (unless `final`): git checkout and some
        editors unlink or rename a file away and write it anew a moment later, and the same
        bytes coming back is no change. The settle timer reports it if it stays away.
        """
        changed: set[str] = set()
        missing: set[str] = set()
        for path in candidates:
            self._unsettled.pop(path, None)
            known = self._index.get(path)
            before = digest_of(known) if known is not None else None
            if before is None and self._indexing and path not in self._touched:
                before = UNKNOWN  # the indexer has not read it yet: any state is news
            entry, _ = scan.entry_for(path, known, trust=False, hasher=self._hasher)
            after = digest_of(entry) if entry is not None else None
            if after is None and before is not None and not final:
                missing.add(path)
                continue
            if self._indexing:
                self._touched.add(path)
            if entry is None:
                self._index.discard(path)
            else:
                self._index.put(path, entry)  # a touch: same digest, new signature
            if after != before:
                changed.add(path)
        self._defer(missing)
        return changed

    def _defer(self, paths: set[str]) -> None:
        """Look at `paths` again after SETTLE_GRACE (lock held)."""
        if not paths:
            return
        due = time.monotonic() + SETTLE_GRACE
        for path in paths:
            self._unsettled.setdefault(path, due)
        self._arm_settle_timer()

    def _arm_settle_timer(self) -> None:
        if self._settle_timer is not None or not self._unsettled or self._observer is None:
            return
        delay = max(0.0, min(self._unsettled.values()) - time.monotonic())
        self._settle_timer = threading.Timer(delay, self._settle)
        self._settle_timer.daemon = True
        self._settle_timer.start()

    def _settle(self) -> None:
        """Timer thread: report the deferred paths whose grace has run out."""
        try:
            with self._lock:
                self._settle_timer = None
                now = time.monotonic()
                due = {p for p, deadline in self._unsettled.items() if deadline <= now}
                rules_changed = any(os.path.basename(p) == GITIGNORE for p in due)
                if not rules_changed:
                    changed: Iterable[str] = self._update(due, final=True)
                    self._arm_settle_timer()
            if rules_changed:
                log.info("watch.gitignore_changed", paths=sorted(due))
                changed = {str(p) for p in self.rescan()}
            self._report(changed)
        except Exception:
            log.exception("watch.error", stage="settle")

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
