"""The inotify observer `watch.SourceWatcher` runs on: one inotify instance, and overflow reported.

Budget: one observer, so one inotify instance for all its watches, and one recursive watch per
root (never one per directory: the default per-user limit is 128 instances). When the kernel's
event queue overflows, events are lost; watchdog (>= 7.1) tells its watch groups, ours turn that
into a `QueueOverflowEvent` on the observer's queue, and the watcher answers with a full rescan,
so no change is lost.
"""

from __future__ import annotations

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
class _OverflowReportingGroup(InotifyWatchGroup):
    """watchdog's watch group, plus a hook run after it has rebuilt its watches on overflow."""

    on_overflow: Callable[[], None] = field(default=lambda: None)

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        self.on_overflow()


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
        )

    def _queue_overflow_marker(self) -> None:
        self._marker_queue.put((QueueOverflowEvent(self.watch.path, is_synthetic=True), self.watch))


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
