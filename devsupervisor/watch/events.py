"""Which filesystem events count, and what the observer thread makes of them.

The watchdog observer thread re-hashes the files an event names and reports only paths whose
bytes differ from the index (appeared and disappeared files included), so a touch, a
same-content rewrite or a checkout that restores the same bytes reports nothing.

A file is hashed when it is complete: when its writer closes it, or when it is renamed into place
(an atomic rename save reports the file once, with its final content). A file that is created,
deleted or renamed away may be in the middle of a rewrite (git checkout unlinks and recreates,
some editors rename the old copy away first), so it waits for its close event, or at most
SETTLE_GRACE, before it is looked at.

Threads: the observer thread handles events; a timer thread settles deferred paths. Both take
the watcher's lock (which guards the index and the filters) and hand changes to `_report`, the
only way to the event loop.

When the kernel's event queue overflows, the observer queues a `QueueOverflowEvent` and the
watcher answers with a full rescan, so no change is lost; a root past the inotify watch limit or
deleted while watched goes to the `RootPoller`.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

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

from devsupervisor.logs.pipeline import get_logger
from devsupervisor.watch import scan
from devsupervisor.watch.content_index import digest_of
from devsupervisor.watch.ignore import GITIGNORE
from devsupervisor.watch.inotify_observer import QueueOverflowEvent, WatchLimitEvent

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from devsupervisor.watch.content_index import ContentIndex
    from devsupervisor.watch.ignore import PathFilter
    from devsupervisor.watch.root_poller import RootPoller

log = get_logger()

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
# Stands for "content unknown" while the index is built: equal to no digest.
UNKNOWN = b"?"


class DispatchHandler(FileSystemEventHandler):
    """Hands every event the observer dispatches to one callable."""

    def __init__(self, handle: Callable[[FileSystemEvent], None]) -> None:
        self._handle = handle

    def dispatch(self, event: FileSystemEvent) -> None:
        self._handle(event)


class EventHandling:
    """The observer and settle-timer threads' part of `SourceWatcher` (a mixin: the state is
    the watcher's)."""

    if TYPE_CHECKING:
        # Set up by SourceWatcher.__init__ / start().
        _roots: tuple[Path, ...]
        _hasher: scan.Hasher
        _observer: BaseObserver | None
        _poller: RootPoller
        _lock: threading.Lock
        _filters: tuple[PathFilter, ...]
        _index: ContentIndex
        _indexing: bool
        _touched: set[str]
        _unsettled: dict[str, float]
        _settle_timer: threading.Timer | None

        def rescan(self) -> frozenset[Path]: ...
        def _report(self, changed: Iterable[str | Path]) -> None: ...
        def _filter_for(self, path: str) -> PathFilter | None: ...
        def _is_watched(self, path: str) -> bool: ...
        def _walk_below(self, directory: str) -> list[str]: ...

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
