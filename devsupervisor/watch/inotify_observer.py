"""The inotify observer `watch.SourceWatcher` runs on: one inotify instance, and overflow reported.

Budget: one observer, so one inotify instance for all its watches, and one recursive watch per
root (never one per directory: the default per-user limit is 128 instances). When the kernel's
event queue overflows, events are lost; watchdog (>= 7.1) tells its watch groups, ours turn that
into a `QueueOverflowEvent` on the observer's queue, and the watcher answers with a full rescan,
so no change is lost.

The watch limit (fs.inotify.max_user_watches): watchdog skips a subdirectory it cannot watch
without a word, so a tree past the limit would be half watched. Our group refuses instead: on
ENOSPC while setting up it removes what it added and raises (the watcher polls that root), and on
ENOSPC for a directory created later it queues a `WatchLimitEvent` (the watcher then polls that
root from then on).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.events import FileSystemEvent
from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver, EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyFD


class QueueOverflowEvent(FileSystemEvent):
    """Synthetic event: the kernel dropped events for the watch on `src_path`."""

    event_type = "overflow"


@dataclass
class WatchLimitEvent(FileSystemEvent):
    """Synthetic event: a directory below the watch on `src_path` could not be watched (ENOSPC)."""

    event_type = "watch_limit"


@dataclass
class _OverflowReportingGroup(InotifyWatchGroup):
    """watchdog's watch group, plus hooks for a queue overflow and for the watch limit."""

    on_overflow: Callable[[], None] = field(default=lambda: None)
    on_limit: Callable[[], None] = field(default=lambda: None)

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        self.on_overflow()

    def _add_callback(self, path: bytes) -> None:
        # InotifyWatchGroup._add_callback, except that ENOSPC is never swallowed (it touches
        # the group's private maps as the original does).
        try:
            wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                if not self.is_active:  # setting up: leave nothing half-watched behind
                    self._remove_callbacks(list(self._active_callbacks_by_watch))
                    raise
                self.on_limit()
            elif path == self.path:
                raise
            return  # a directory that vanished meanwhile, as watchdog has it
        self._active_callbacks_by_path[path] = wd
        self._active_callbacks_by_watch[wd] = path


class _OverflowReportingEmitter(InotifyEmitter):
    """Inotify emitter that queues a `QueueOverflowEvent` when the kernel queue overflows."""

    def __init__(
        self,
        event_queue: EventQueue,
        watch: ObservedWatch,
        *,
        timeout: float = DEFAULT_OBSERVER_TIMEOUT,
        event_filter: list[type[FileSystemEvent]] | None = None,
        inotify_fd: InotifyFD | None = None,
    ) -> None:
        super().__init__(
            event_queue, watch, timeout=timeout, event_filter=event_filter, inotify_fd=inotify_fd
        )
        # Our own handle on the queue: the marker must bypass the event filter.
        self._marker_queue = event_queue

    def on_thread_start(self) -> None:
        # InotifyEmitter.on_thread_start with our group in place of InotifyWatchGroup; watchdog
        # has no public seam for this, so it touches the emitter's `_inotify*` attributes.
        self._inotify = _OverflowReportingGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
            on_overflow=self._queue_overflow_marker,
            on_limit=self._queue_limit_marker,
        )

    def _queue_overflow_marker(self) -> None:
        self._marker_queue.put((QueueOverflowEvent(self.watch.path, is_synthetic=True), self.watch))

    def _queue_limit_marker(self) -> None:
        self._marker_queue.put((WatchLimitEvent(self.watch.path, is_synthetic=True), self.watch))


class OverflowAwareObserver(BaseObserver):
    """An inotify observer (one inotify instance for all its watches) that reports overflow."""

    def __init__(self, *, timeout: float = DEFAULT_OBSERVER_TIMEOUT) -> None:
        self.inotify_fd = InotifyFD()
        self.inotify_fd.start()
        super().__init__(_OverflowReportingEmitter, timeout=timeout, inotify_fd=self.inotify_fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self.inotify_fd.stop()
        self.inotify_fd.join()
