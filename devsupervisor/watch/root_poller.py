"""Roots inotify cannot cover, polled until it can.

A root is handed here when
- it is missing when its watch is set up (the config named it, and it is gone by now), or it is
  deleted while watched (its inotify watch ends with it): the poller waits for it to exist again,
  watches it, and has the watcher rescan, so what came back with it is reported;
- the inotify watch limit (fs.inotify.max_user_watches) is reached below it: the root is polled
  (a rescan every POLL_INTERVAL, which reads only files whose stat signature changed) and inotify
  is tried again every RETRY_WATCH_EVERY polls, in case the limit was raised meanwhile.

Threads: one poller thread per watcher, started on the first root handed over; `try_watch` and
`rescan` are the watcher's own thread-safe methods.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path

from devsupervisor.logs.pipeline import get_logger

log = get_logger()

# A save in a polled root is noticed within about a second: slower than inotify's milliseconds,
# fast enough for an edit loop, and one stat walk per second costs little next to a build.
POLL_INTERVAL = 1.0
# Polls between attempts to watch a polled root with inotify again (someone may raise the limit).
RETRY_WATCH_EVERY = 30
# What a reader needs to lift the limit (the sysctl and a value that fits large monorepos).
LIMIT_HINT = "raise it with: sysctl fs.inotify.max_user_watches=524288"

WAITING = "waiting"  # the root does not exist: wait for it
POLLING = "polling"  # the root exists but inotify cannot watch all of it


def is_watch_limit(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno == errno.ENOSPC


class RootPoller:
    """Waits for missing roots and polls roots past the watch limit (module docstring).

    Args:
        try_watch: watch a root with inotify again; returns the error, or None when it worked.
        rescan: rescan every root and report what changed (the watcher's `rescan` + report).
        interval: seconds between polls (a seam for tests).
    """

    def __init__(
        self,
        *,
        try_watch: Callable[[Path], BaseException | None],
        rescan: Callable[[], None],
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._try_watch = try_watch
        self._rescan = rescan
        self._interval = interval
        self._lock = threading.Lock()
        self._roots: dict[Path, str] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0

    @property
    def roots(self) -> dict[Path, str]:
        """Root -> WAITING or POLLING, for every root inotify does not cover now."""
        with self._lock:
            return dict(self._roots)

    def add(self, root: Path, error: BaseException | str) -> None:
        """Take over `root`, whose watch failed with `error` or ended (a string saying why)."""
        limit = not isinstance(error, str) and is_watch_limit(error)
        state = POLLING if limit and root.is_dir() else WAITING
        with self._lock:
            if self._roots.get(root) == state:
                return
            self._roots[root] = state
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="devsup-root-poller", daemon=True
                )
                self._thread.start()
        if state == POLLING:
            log.error(
                "watch.limit_reached",
                root=str(root),
                error="inotify watch limit reached (fs.inotify.max_user_watches)",
                action=f"polling every {self._interval:g}s",
                hint=LIMIT_HINT,
            )
        else:
            log.warning(
                "watch.root_missing", root=str(root), error=str(error), action="waiting for it"
            )

    def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.poll()
            except Exception:  # the poller must outlive a bad poll
                log.exception("watch.poll_failed")

    def poll(self) -> None:
        """One round: watch what can be watched again, then rescan if anything is polled or
        came back."""
        self._polls += 1
        retry = self._polls % RETRY_WATCH_EVERY == 0
        rescan = False
        for root, state in self.roots.items():
            if state == WAITING and not root.is_dir():
                continue
            if state == POLLING:
                rescan = True
                if not retry:
                    continue
            error = self._try_watch(root)
            if error is None:
                with self._lock:
                    self._roots.pop(root, None)
                log.info("watch.root_watched", root=str(root), was=state)
                rescan = True
            elif is_watch_limit(error):
                self.add(root, error)  # says so once, when a waiting root becomes polled
                rescan = True
        if rescan:
            self._rescan()
