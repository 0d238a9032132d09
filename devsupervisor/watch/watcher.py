"""Change detection: which watched source files really changed content.

`SourceWatcher` keeps a content hash of every watched file (see `ignore.PathFilter`). The watchdog
observer thread re-hashes the files an event names and reports only paths whose bytes differ from
the snapshot (appeared and disappeared files included), so a touch, a same-content rewrite or a
checkout that restores the same bytes reports nothing.

A file is hashed when it is complete: when its writer closes it, or when it is renamed into place
(an atomic rename save reports the file once, with its final content). A file that is created,
deleted or renamed away may be in the middle of a rewrite (git checkout unlinks and recreates,
some editors rename the old copy away first), so it waits for its close event, or at most
SETTLE_GRACE, before it is looked at.

Threads: the observer thread handles events; a timer thread settles deferred paths; `rescan()`
may run in any thread (the daemon calls it through `asyncio.to_thread`). One lock serialises
hashing and snapshot updates, so a snapshot entry is always the hash of the latest read. Changes
reach the event loop only through `loop.call_soon_threadsafe`; paths reported while the loop is
busy are merged into one batch.

Budget: one observer (`inotify_observer.OverflowAwareObserver`), so one inotify instance, and one
recursive watch per root. When the kernel's event queue overflows, the observer queues a
`QueueOverflowEvent` and the watcher answers with a full rescan, so no change is lost. Hashing
itself is in `content_hash`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
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
from watchdog.observers.api import BaseObserver

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.watch import content_hash
from devsupervisor.watch.content_hash import hash_file
from devsupervisor.watch.ignore import GITIGNORE, PathFilter
from devsupervisor.watch.inotify_observer import OverflowAwareObserver, QueueOverflowEvent

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


class _Handler(FileSystemEventHandler):
    def __init__(self, handle: Callable[[FileSystemEvent], None]) -> None:
        self._handle = handle

    def dispatch(self, event: FileSystemEvent) -> None:
        self._handle(event)


class SourceWatcher:
    """Reports content changes of the watched files below `roots` to the event loop.

    Args:
        roots: directories to watch recursively.
        include / ignore: gitignore-style globs relative to each root (see `PathFilter`).
        on_change: called on the loop thread with the paths whose content changed.
        loop: the event loop that owns all state.
        extra_ignored: paths the build writes (never reported).
        observer_factory: makes the watchdog observer; a seam for tests.
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
    ) -> None:
        self._roots = tuple(dict.fromkeys(root.resolve() for root in roots))
        self._include = tuple(include)
        self._ignore = tuple(ignore)
        self._extra = tuple(extra_ignored)
        self._on_change = on_change
        self._loop = loop
        self._observer_factory = observer_factory
        self._observer: BaseObserver | None = None
        # Guards _filters and _snapshot; held while hashing so updates follow read order.
        self._lock = threading.Lock()
        self._filters: tuple[PathFilter, ...] = ()
        self._snapshot: dict[Path, bytes] = {}
        # Paths to look at again once their grace ends (path -> monotonic deadline).
        self._unsettled: dict[Path, float] = {}
        self._settle_timer: threading.Timer | None = None
        # Changes waiting for the loop; at most one flush is scheduled at a time.
        self._pending_lock = threading.Lock()
        self._pending: set[Path] = set()
        self._flush_scheduled = False

    @property
    def paths(self) -> tuple[Path, ...]:
        """The watched roots (resolved)."""
        return self._roots

    @property
    def watched_count(self) -> int:
        """How many files are in the snapshot."""
        with self._lock:
            return len(self._snapshot)

    @property
    def observer(self) -> BaseObserver | None:
        """The running observer (for status and tests), None before `start()`."""
        return self._observer

    def start(self) -> None:
        """Watch the roots and hash every watched file. Blocks until both are done.

        The watches are in place before the baseline is hashed, so a change made meanwhile is
        either in the baseline or reported; events wait on the lock until the baseline exists.
        """
        started = time.monotonic()
        with self._lock:
            observer = self._observer_factory()
            try:
                handler = _Handler(self._handle_event)
                for root in self._roots:
                    observer.schedule(
                        handler, str(root), recursive=True, event_filter=WATCHED_EVENTS
                    )
                observer.start()
                self._filters = self._make_filters()
                self._snapshot = self._hash_all()
            except BaseException:
                # The observer owns threads and an inotify instance even before it starts.
                observer.stop()
                if observer.is_alive():
                    observer.join()
                raise
            self._observer = observer
            count = len(self._snapshot)
        log.info(
            "watch.started",
            roots=[str(r) for r in self._roots],
            files=count,
            duration=round(time.monotonic() - started, 3),
        )

    def stop(self) -> None:
        """Stop the observer thread and wait for it. The snapshot stays for `fingerprint()`."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        if observer.is_alive():
            observer.join()
        with self._lock:
            timer, self._settle_timer = self._settle_timer, None
        if timer is not None:
            timer.cancel()
        log.info("watch.stopped", roots=[str(r) for r in self._roots])

    def rescan(self) -> frozenset[Path]:
        """Re-read the `.gitignore` rules, hash every watched file, update the snapshot and return
        the paths whose content differs. Thread-safe; it does not call `on_change`."""
        started = time.monotonic()
        with self._lock:
            self._filters = self._make_filters()
            current = self._hash_all()
            self._unsettled.clear()  # a rescan settles everything
            old = self._snapshot
            changed = frozenset(
                p for p in old.keys() | current.keys() if old.get(p) != current.get(p)
            )
            self._snapshot = current
        log.info(
            "watch.rescanned",
            changed=len(changed),
            files=len(current),
            duration=round(time.monotonic() - started, 3),
        )
        return changed

    def fingerprint(self) -> str:
        """A hash over all watched paths and their content hashes: equal means same sources."""
        with self._lock:
            return content_hash.fingerprint(self._snapshot)

    # Observer thread.

    def _handle_event(self, event: FileSystemEvent) -> None:
        # An exception here would end the observer thread and silently stop all watching.
        try:
            if isinstance(event, QueueOverflowEvent):
                log.warning("watch.overflow", root=os.fsdecode(event.src_path))
                self._report(self.rescan())
                return
            self._report(self._rehash_for(event))
        except Exception:
            log.exception("watch.error", fs_event=repr(event))
            try:
                self._report(self.rescan())
            except Exception:
                log.exception("watch.rescan_failed")

    def _rehash_for(self, event: FileSystemEvent) -> frozenset[Path]:
        paths = [Path(os.fsdecode(p)) for p in (event.src_path, event.dest_path) if p]
        src, dest = paths[0], (paths[1] if len(paths) > 1 else None)
        if not event.is_directory and any(p.name == GITIGNORE for p in paths):
            # New rules change what is watched: rescan, but only with the file complete.
            complete = dest or (src if isinstance(event, FileClosedEvent) else None)
            if complete is not None and complete.name == GITIGNORE:
                log.info("watch.gitignore_changed", path=str(complete))
                return self.rescan()
            with self._lock:
                self._defer({p for p in paths if p.name == GITIGNORE})
            return frozenset()
        with self._lock:
            # Hash now only what is complete now: a file just closed after writing, or renamed
            # into place. What was created, deleted or renamed away may be mid-rewrite (git
            # checkout unlinks and recreates; some editors rename the old file away first), so
            # it waits for its close event or for the settle timer.
            arrived: set[Path] = set()
            unsettled: set[Path] = set()
            if isinstance(event, DirCreatedEvent):
                unsettled.update(self._walk_below(src))
            elif event.is_directory:  # deleted or moved: what we knew below it, where it went
                unsettled.update(p for p in self._snapshot if p.is_relative_to(src))
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
            return self._update(arrived)

    def _update(self, candidates: set[Path], *, final: bool = False) -> frozenset[Path]:
        """Rehash `candidates` (lock held) and return those whose content changed.

        A file found missing is not reported yet (unless `final`): git checkout and some
        editors unlink or rename a file away and write it anew a moment later, and the same
        bytes coming back is no change. The settle timer reports it if it stays away.
        """
        changed: set[Path] = set()
        missing: set[Path] = set()
        for path in candidates:
            self._unsettled.pop(path, None)
            digest = hash_file(path)
            if digest == self._snapshot.get(path):
                continue
            if digest is None and not final:
                missing.add(path)
            elif digest is None:
                del self._snapshot[path]
                changed.add(path)
            else:
                self._snapshot[path] = digest
                changed.add(path)
        self._defer(missing)
        return frozenset(changed)

    def _defer(self, paths: set[Path]) -> None:
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
                rules_changed = any(p.name == GITIGNORE for p in due)
                if not rules_changed:
                    changed = self._update(due, final=True)
                    self._arm_settle_timer()
            if rules_changed:
                log.info("watch.gitignore_changed", paths=sorted(str(p) for p in due))
                changed = self.rescan()
            self._report(changed)
        except Exception:
            log.exception("watch.error", stage="settle")

    def _report(self, changed: frozenset[Path]) -> None:
        if not changed:
            return
        with self._pending_lock:
            self._pending.update(changed)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:
            # The loop is closed: the daemon is shutting down and nobody is left to tell.
            log.debug("watch.loop_closed", dropped=len(changed))

    # Loop thread.

    def _flush(self) -> None:
        with self._pending_lock:
            batch = frozenset(self._pending)
            self._pending.clear()
            self._flush_scheduled = False
        if batch:
            self._on_change(batch)

    # Helpers (lock held).

    def _make_filters(self) -> tuple[PathFilter, ...]:
        return tuple(PathFilter(r, self._include, self._ignore, self._extra) for r in self._roots)

    def _filter_for(self, path: Path) -> PathFilter | None:
        # The deepest root wins when roots nest.
        owners = [f for f in self._filters if path.is_relative_to(f.root)]
        return max(owners, key=lambda f: len(f.root.parts), default=None)

    def _is_watched(self, path: Path) -> bool:
        path_filter = self._filter_for(path)
        return path_filter is not None and path_filter.is_watched(path)

    def _walk_below(self, directory: Path) -> list[Path]:
        path_filter = self._filter_for(directory)
        if path_filter is None:
            return []
        # With nested roots the deepest root's filter has the last word on each file.
        return [p for p in path_filter.walk(directory) if self._is_watched(p)]

    def _hash_all(self) -> dict[Path, bytes]:
        snapshot: dict[Path, bytes] = {}
        for path_filter in self._filters:
            for path in path_filter.walk():
                if path in snapshot or not self._is_watched(path):
                    continue
                digest = hash_file(path)
                if digest is not None:
                    snapshot[path] = digest
        return snapshot
