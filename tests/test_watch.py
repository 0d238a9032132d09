"""Change detection with real files and the real inotify observer.

To show that something is NOT reported, a test writes a sentinel file afterwards and waits until the
sentinel is reported: the observer handles events in order, so by then the earlier ones are done.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor

from devsupervisor.watch import scan
from devsupervisor.watch.content_hash import hash_file
from devsupervisor.watch.ignore import PathFilter, is_editor_temp
from devsupervisor.watch.scan import RACY_WINDOW_NS
from devsupervisor.watch.watcher import (
    INDEXER_THREAD,
    OverflowAwareObserver,
    SourceWatcher,
    file_clock_ns,
)

GO_INCLUDE = ("**/*.go", "go.mod", "go.sum")
QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
# Generous: a deadline only matters when a test fails; passing waits end at the condition.
DEADLINE = 10.0


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def inotify_instances() -> int:
    """inotify instances this process holds (what the per-user budget of 128 counts)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue
    return count


class Harness:
    """An event loop, the batches `on_change` received on it, and the watchers to stop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.batches: list[frozenset[Path]] = []
        self.callback_threads: set[int] = set()
        self.watchers: list[SourceWatcher] = []
        self._arrived = asyncio.Event()
        self._sentinels = 0

    def on_change(self, paths: frozenset[Path]) -> None:
        self.callback_threads.add(threading.get_ident())
        self.batches.append(paths)
        self._arrived.set()

    def watch(
        self,
        roots: Sequence[Path] | None = None,
        *,
        include: Sequence[str] = GO_INCLUDE,
        ignore: Sequence[str] = (),
        extra_ignored: Sequence[Path] = (),
        observer_factory: Callable[[], BaseObserver] = OverflowAwareObserver,
        index_path: Path | None = None,
        wait_indexed: bool = True,
        hasher: Callable[[str], bytes | None] = hash_file,
        recursive: bool = True,
        index_delay: float = 0.0,
    ) -> SourceWatcher:
        watcher = SourceWatcher(
            roots or [self.root],
            include,
            ignore,
            on_change=self.on_change,
            loop=self.loop,
            extra_ignored=extra_ignored,
            observer_factory=observer_factory,
            index_path=index_path,
            hasher=hasher,
            recursive=recursive,
            index_delay=index_delay,
        )
        self.watchers.append(watcher)
        self._wait_file_clock()
        watcher.start()
        # Most tests state what happens once the index stands; the lazy-index tests say otherwise.
        if wait_indexed:
            assert watcher.wait_indexed(DEADLINE)
        return watcher

    def _wait_file_clock(self) -> None:
        """Until the file clock is past the files written so far: the watcher counts a change
        in the clock tick of its start as made after it (the lazy-index tests say why)."""
        latest = max((p.stat().st_ctime_ns for p in self.root.rglob("*")), default=0)
        deadline = time.monotonic() + DEADLINE
        while file_clock_ns() <= latest and time.monotonic() < deadline:
            time.sleep(0.001)

    def wait_file_clock_past(self, path: Path, margin_ns: int) -> None:
        """Until the file clock is `margin_ns` past `path`'s last change."""
        latest = path.stat().st_ctime_ns + margin_ns
        deadline = time.monotonic() + DEADLINE
        while file_clock_ns() <= latest and time.monotonic() < deadline:
            time.sleep(0.01)

    def fingerprint(self, watcher: SourceWatcher) -> str:
        return self.loop.run_until_complete(watcher.fingerprint())

    @property
    def reported(self) -> set[Path]:
        return set().union(*self.batches)

    def times_reported(self, path: Path) -> int:
        return sum(path in batch for batch in self.batches)

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        self.loop.run_until_complete(self._wait(predicate, what))

    def wait_reported(self, *paths: Path) -> None:
        self.wait_for(lambda: set(paths) <= self.reported, f"reports of {paths}")

    def settle(self) -> None:
        """Write a new sentinel and wait for it: every earlier event has been handled."""
        self._sentinels += 1
        sentinel = self.root / f"sentinel_{self._sentinels}.go"
        # Renamed into place, so no event of the sentinel itself is still pending afterwards.
        temp = write(self.root / ".sentinel.swp", str(self._sentinels))  # an ignored name
        os.replace(temp, sentinel)
        self.wait_reported(sentinel)

    async def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = self.loop.time() + DEADLINE
        while not predicate():
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.reported}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                continue

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.loop.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "src")
    harness.root.mkdir()
    yield harness
    harness.close()


# PathFilter: the rules, without an observer.


def test_include_and_ignore_globs_are_gitwildmatch_relative_to_the_root(tmp_path: Path) -> None:
    """`**/*.go` matches at the root and below, `go.mod` at any depth, ignore globs win."""
    f = PathFilter(tmp_path, GO_INCLUDE, ["**/*_test.go", "bin/**", "vendor/"])
    assert f.is_watched(tmp_path / "main.go")
    assert f.is_watched(tmp_path / "cmd" / "main.go")
    assert f.is_watched(tmp_path / "go.mod")
    assert f.is_watched(tmp_path / "tools" / "go.mod")
    assert not f.is_watched(tmp_path / "README.md")
    assert not f.is_watched(tmp_path / "cmd" / "main_test.go")
    assert not f.is_watched(tmp_path / "bin" / "gen.go")
    assert not f.is_watched(tmp_path / "vendor" / "x" / "y.go")
    assert f.is_ignored_dir(tmp_path / "vendor")
    assert not f.is_watched(tmp_path.parent / "elsewhere.go")


def test_gitignore_files_root_nested_and_negation(tmp_path: Path) -> None:
    """Root and nested .gitignore files apply, deeper ones override, `!` re-includes."""
    write(tmp_path / ".gitignore", "*.pb.go\n!keep.pb.go\ngen/\n")
    write(tmp_path / "api" / ".gitignore", "!api.pb.go\nlocal.go\n")
    write(tmp_path / "gen" / ".gitignore", "!*.go\n")
    f = PathFilter(tmp_path, ["**/*.go"], [])
    assert not f.is_watched(tmp_path / "x.pb.go")
    assert f.is_watched(tmp_path / "keep.pb.go")
    assert f.is_watched(tmp_path / "api" / "api.pb.go")  # nested negation beats the root rule
    assert not f.is_watched(tmp_path / "api" / "other.pb.go")
    assert not f.is_watched(tmp_path / "api" / "local.go")
    assert f.is_watched(tmp_path / "local.go")  # nested rules stay below their directory
    # As in git: nothing inside an excluded directory can be re-included.
    assert not f.is_watched(tmp_path / "gen" / "a.go")
    assert f.is_ignored_dir(tmp_path / "gen")


@pytest.mark.parametrize(
    "name",
    [
        ".main.go.swp",
        ".main.go.swo",
        ".main.go.swx",
        "main.go~",
        "main.go.~1~",
        "4913",
        "5036",
        ".#main.go",
        "#main.go#",
        "main.go___jb_tmp___",
        "main.go___jb_old___",
        ".goutputstream-AB12CD",
        ".main.go.kate-swp",
    ],
)
def test_editor_temp_files_are_ignored(tmp_path: Path, name: str) -> None:
    """Each editor temp/backup name is ignored even when the include globs match everything."""
    f = PathFilter(tmp_path, ["**"], [])
    assert is_editor_temp(name)
    assert not f.is_watched(tmp_path / "cmd" / name)
    assert f.is_watched(tmp_path / "cmd" / "main.go")


def test_editor_rules_spare_ordinary_names(tmp_path: Path) -> None:
    """Names that merely resemble temp files (numbers, .swift, .sql) stay watched."""
    f = PathFilter(tmp_path, ["**"], [])
    for name in ["4914", "123", "main.swift", "_schema.sql", "a#b.go"]:
        assert f.is_watched(tmp_path / name), name


def test_git_directory_and_extra_ignored_paths(tmp_path: Path) -> None:
    """Nothing in `.git/` is watched, nor the build outputs given as extra_ignored."""
    f = PathFilter(
        tmp_path, ["**"], [], extra_ignored=[tmp_path / "bin" / "platform", tmp_path / "out"]
    )
    assert not f.is_watched(tmp_path / ".git" / "HEAD")
    assert not f.is_watched(tmp_path / "sub" / ".git" / "index")
    assert not f.is_watched(tmp_path / "bin" / "platform")
    assert f.is_watched(tmp_path / "bin" / "platform.go")
    assert not f.is_watched(tmp_path / "out" / "x.go")


# SourceWatcher with the real observer.


def test_one_recursive_watch_per_root_and_one_inotify_instance(h: Harness, tmp_path: Path) -> None:
    """Two roots with deep trees: one emitter per root and a single inotify instance in total."""
    other = tmp_path / "other"
    for root in (h.root, other):
        for i in range(30):
            write(root / f"d{i}" / "e" / "f.go", "package f")
    observers: list[BaseObserver] = []

    def factory() -> BaseObserver:
        observers.append(OverflowAwareObserver())
        return observers[0]

    before = inotify_instances()
    watcher = h.watch([h.root, other], observer_factory=factory)
    assert len(observers) == 1
    assert len(observers[0].emitters) == 2
    assert {e.watch.is_recursive for e in observers[0].emitters} == {True}
    assert inotify_instances() - before == 1
    assert watcher.watched_count == 60
    assert watcher.paths == (h.root.resolve(), other.resolve())


def test_change_is_reported_on_the_loop_thread(h: Harness) -> None:
    """A content change reaches on_change, called on the thread that runs the loop."""
    main = write(h.root / "main.go", "package main // v1")
    h.watch()
    main.write_text("package main // v2")
    h.wait_reported(main)
    assert h.callback_threads == {threading.get_ident()}


def test_touch_and_same_content_rewrite_report_nothing(h: Harness) -> None:
    """Touching a file or rewriting the same bytes is not a change."""
    main = write(h.root / "main.go", "package main")
    h.watch()
    main.touch()
    os.utime(main, (1, 1))
    main.write_text("package main")
    h.settle()
    assert main not in h.reported


def test_atomic_rename_save_reports_the_file_once(h: Harness) -> None:
    """Writing a temp file and renaming it onto main.go reports main.go once, not the temp."""
    main = write(h.root / "cmd" / "main.go", "package main // v1")
    h.watch(include=["**"])
    temp = write(h.root / "cmd" / ".main.go.swp", "package main // v2")
    os.replace(temp, main)
    h.settle()
    assert h.times_reported(main) == 1
    assert h.reported - {main} == {h.root / "sentinel_1.go"}


def test_jetbrains_safe_write_reports_only_the_file(h: Harness) -> None:
    """JetBrains' tmp/old rename dance reports main.go and none of its temp names."""
    main = write(h.root / "main.go", "package main // v1")
    h.watch(include=["**"])
    write(h.root / "main.go___jb_tmp___", "package main // v2")
    os.rename(main, h.root / "main.go___jb_old___")
    os.rename(h.root / "main.go___jb_tmp___", main)
    os.unlink(h.root / "main.go___jb_old___")
    h.settle()
    assert main in h.reported
    assert h.reported == {main, h.root / "sentinel_1.go"}


def test_burst_of_500_changed_files_reports_all_of_them(h: Harness) -> None:
    """A checkout rewriting 500 files: the union of the batches is exactly those 500."""
    files = [h.root / f"pkg{i % 10}" / f"f{i}.go" for i in range(500)]
    for path in files:
        write(path, f"package pkg // {path.name} v1")
    watcher = h.watch()
    for path in files:
        path.write_text(f"package pkg // {path.name} v2")
    h.wait_for(lambda: h.reported >= set(files), "all 500 files")
    h.settle()
    assert h.reported == {*files, h.root / "sentinel_1.go"}
    assert watcher.watched_count == 501


def test_checkout_restoring_the_same_bytes_reports_nothing(h: Harness) -> None:
    """Deleting and recreating 100 files with their old bytes reports none of them."""
    files = [write(h.root / "pkg" / f"f{i}.go", f"package pkg // {i}") for i in range(100)]
    h.watch()
    for i, path in enumerate(files):
        tmp = path.with_suffix(".orig")
        tmp.write_text(f"package pkg // {i}")
        os.replace(tmp, path)
    h.settle()
    assert not h.reported & set(files)


def test_new_and_deleted_files_are_reported(h: Harness) -> None:
    """A file appearing and a file disappearing are both changes."""
    old = write(h.root / "old.go", "package main")
    h.watch()
    new = write(h.root / "new.go", "package main")
    old.unlink()
    h.wait_reported(new, old)


def test_removing_a_directory_reports_every_file_below(h: Harness) -> None:
    """rm -rf of a directory reports all watched files that were inside it."""
    files = [write(h.root / "pkg" / f"d{i % 3}" / f"f{i}.go", str(i)) for i in range(30)]
    h.watch()
    shutil.rmtree(h.root / "pkg")
    h.wait_for(lambda: h.reported >= set(files), "all files below pkg/")


def test_directory_moved_out_and_in_is_reported(h: Harness, tmp_path: Path) -> None:
    """Moving a directory out of the tree, or one into it, reports every file it holds."""
    inside = [write(h.root / "pkg" / "a" / f"f{i}.go", str(i)) for i in range(10)]
    write(tmp_path / "incoming" / "b" / "g.go", "package b")
    h.watch()
    os.rename(h.root / "pkg", tmp_path / "gone")
    os.rename(tmp_path / "incoming", h.root / "incoming")
    h.wait_for(
        lambda: h.reported >= {*inside, h.root / "incoming" / "b" / "g.go"}, "moved directories"
    )


def test_build_output_is_never_reported(h: Harness) -> None:
    """Files the build writes (extra_ignored) never produce a change, whatever the globs say."""
    binary = h.root / "bin" / "platform"
    h.watch(include=["**"], extra_ignored=[binary])
    for i in range(5):
        write(binary, f"ELF {i}")
    h.settle()
    assert binary not in h.reported


def test_gitignore_edit_takes_effect_at_once(h: Harness) -> None:
    """A new .gitignore rule applies to the very next event."""
    h.watch()
    write(h.root / ".gitignore", "skip.go\n")
    write(h.root / "skip.go", "package main")
    h.settle()
    assert h.root / "skip.go" not in h.reported


def test_rescan_returns_changes_no_event_announced(h: Harness, tmp_path: Path) -> None:
    """rescan() finds a change made through a hard link outside the tree, then nothing more."""
    main = write(h.root / "main.go", "package main // v1")
    link = tmp_path / "outside-link"
    os.link(main, link)
    watcher = h.watch()
    before = h.fingerprint(watcher)
    link.write_text("package main // v2")
    h.settle()
    assert main not in h.reported  # inotify on the directory never saw it
    assert watcher.rescan() == frozenset({main})
    assert watcher.rescan() == frozenset()
    assert h.fingerprint(watcher) != before


def test_fingerprint_follows_content_not_timestamps(h: Harness) -> None:
    """The fingerprint is stable across touches and returns with the same content."""
    main = write(h.root / "main.go", "package main // v1")
    watcher = h.watch()
    v1 = h.fingerprint(watcher)
    main.write_text("package main // v2")
    h.wait_reported(main)
    assert h.fingerprint(watcher) != v1
    main.write_text("package main // v1")
    h.wait_for(lambda: h.times_reported(main) == 2, "the second change")
    os.utime(main, (1, 1))
    assert h.fingerprint(watcher) == v1


def test_simulated_queue_overflow_triggers_a_rescan(h: Harness, tmp_path: Path) -> None:
    """An IN_Q_OVERFLOW from inotify leads to a full rescan that reports the unseen change."""
    main = write(h.root / "main.go", "package main // v1")
    link = tmp_path / "outside-link"
    os.link(main, link)
    with capture_logs() as logs:
        watcher = h.watch()
        link.write_text("package main // v2")
        h.settle()
        assert main not in h.reported
        observer = watcher.observer
        assert isinstance(observer, OverflowAwareObserver)
        # What the kernel sends: wd -1, IN_Q_OVERFLOW; fed to watchdog's own handling.
        overflow = InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b"")
        observer.inotify_fd.handle_event(overflow)
        h.wait_reported(main)
    assert any(entry["event"] == "watch.overflow" for entry in logs)


def test_real_queue_overflow_loses_no_change(h: Harness) -> None:
    """With the kernel queue cut to 2 events, a 300-file burst overflows and all are reported."""
    if not os.access(QUEUE_LIMIT, os.W_OK):
        pytest.skip(f"needs root to lower {QUEUE_LIMIT}; the simulated overflow test still runs")

    def small_queue_observer() -> BaseObserver:
        # The limit is read when the inotify instance is created: lower it just for that.
        original = QUEUE_LIMIT.read_text()
        QUEUE_LIMIT.write_text("2\n")
        try:
            return OverflowAwareObserver()
        finally:
            QUEUE_LIMIT.write_text(original)

    files = [h.root / f"p{i % 6}" / f"f{i}.go" for i in range(300)]
    with capture_logs() as logs:
        h.watch(observer_factory=small_queue_observer)
        for path in files:
            write(path, f"package p // {path.name}")
        h.wait_for(lambda: h.reported >= set(files), "all 300 files")
    assert any(entry["event"] == "watch.overflow" for entry in logs)


def test_started_and_indexed_logs_name_roots_and_file_count(h: Harness) -> None:
    """watch.started carries the roots, watch.indexed how many files are watched."""
    write(h.root / "main.go", "package main")
    write(h.root / "README.md", "not a source")
    with capture_logs() as logs:
        h.watch()
    started = [e for e in logs if e["event"] == "watch.started"]
    assert started[0]["roots"] == [str(h.root.resolve())]
    indexed = [e for e in logs if e["event"] == "watch.indexed"]
    assert indexed[0]["files"] == 1


def test_git_style_unlink_and_recreate_with_same_bytes_reports_nothing(h: Harness) -> None:
    """git checkout unlinks a file and creates it anew: same bytes back means no change."""
    files = [write(h.root / "pkg" / f"f{i}.go", f"package pkg // {i}") for i in range(100)]
    h.watch()
    for i, path in enumerate(files):
        path.unlink()
        path.write_text(f"package pkg // {i}")
    h.settle()
    assert not h.reported & set(files)


def test_rename_away_save_reports_only_the_file(h: Harness) -> None:
    """vim with backupcopy=no renames main.go to main.go~ and writes a new main.go."""
    main = write(h.root / "main.go", "package main // v1")
    h.watch(include=["**"])
    os.rename(main, h.root / "main.go~")
    main.write_text("package main // v2")
    os.unlink(h.root / "main.go~")
    h.settle()
    assert h.reported == {main, h.root / "sentinel_1.go"}


def test_file_appearing_without_a_write_is_reported(h: Harness, tmp_path: Path) -> None:
    """A hard link or symlink creates a file with no close event; the settle timer reports it."""
    source = write(tmp_path / "outside.go", "package main")
    h.watch()
    os.link(source, h.root / "linked.go")
    os.symlink(source, h.root / "symlinked.go")
    h.wait_reported(h.root / "linked.go", h.root / "symlinked.go")


def test_deleting_a_gitignore_unhides_its_files(h: Harness) -> None:
    """Removing a .gitignore makes the files it hid watched, and so reported as new."""
    write(h.root / ".gitignore", "gen.go\n")
    gen = write(h.root / "gen.go", "package main")
    watcher = h.watch()
    assert watcher.watched_count == 0
    (h.root / ".gitignore").unlink()
    h.wait_reported(gen)


# The lazy index: start before indexing, persisted between runs.


class BlindObserver(BaseObserver):
    """Schedules nothing: a watcher on it gets no event, as if every one were still in flight."""

    def __init__(self) -> None:
        super().__init__(InotifyEmitter)

    def schedule(
        self,
        event_handler: FileSystemEventHandler,
        path: str | Path,
        *,
        recursive: bool = False,
        event_filter: list[type[FileSystemEvent]] | None = None,
        follow_symlink: bool = False,
    ) -> ObservedWatch:
        return ObservedWatch(path, recursive=recursive, event_filter=event_filter)


class GatedHasher:
    """hash_file, but the indexer thread waits at its first file until `release()`."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._open = threading.Event()

    def __call__(self, path: str) -> bytes | None:
        if threading.current_thread().name == INDEXER_THREAD:
            self.reached.set()
            assert self._open.wait(DEADLINE)
        return hash_file(path)

    def release(self) -> None:
        self._open.set()


def index_events(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "watch.indexed"]


def test_start_returns_before_the_index_and_fingerprint_waits_for_it(h: Harness) -> None:
    """start() does not hash; `await fingerprint()` waits for the complete index."""
    files = [write(h.root / f"p{i}" / "f.go", f"package p // {i}") for i in range(20)]
    gate = GatedHasher()
    watcher = h.watch(hasher=gate, wait_indexed=False)
    assert gate.reached.wait(DEADLINE)
    assert not watcher.indexed
    pending = h.loop.create_task(watcher.fingerprint())
    h.loop.run_until_complete(asyncio.sleep(0))  # the task runs up to its wait
    assert not pending.done()
    gate.release()
    fingerprint = h.loop.run_until_complete(pending)
    assert watcher.indexed and watcher.watched_count == len(files)
    unwatched = h.watch([h.root])
    assert h.fingerprint(unwatched) == fingerprint


def test_change_during_indexing_is_reported(h: Harness) -> None:
    """A file changed while the index is built is reported, though its old content was never
    read: the indexer had not reached it."""
    write(h.root / "a" / "first.go", "package a")
    later = write(h.root / "z" / "later.go", "package z // v1")
    gate = GatedHasher()
    h.watch(hasher=gate, wait_indexed=False)
    assert gate.reached.wait(DEADLINE)
    later.write_text("package z // v2")
    h.wait_reported(later)
    gate.release()


def test_change_during_indexing_is_reported_without_its_event(h: Harness) -> None:
    """With no event at all (still in flight when the indexer read the new bytes), the indexer
    itself reports a file changed after the start."""
    write(h.root / "a" / "first.go", "package a")
    later = write(h.root / "z" / "later.go", "package z // v1")
    gate = GatedHasher()
    watcher = h.watch(hasher=gate, wait_indexed=False, observer_factory=BlindObserver)
    assert gate.reached.wait(DEADLINE)
    later.write_text("package z // v2")
    gate.release()
    h.wait_reported(later)
    assert watcher.wait_indexed(DEADLINE)
    assert h.reported == {later}


def test_persisted_index_is_reused_when_valid(h: Harness, tmp_path: Path) -> None:
    """A restart reads no file whose stat signature is unchanged, and a same-content save after
    it reports nothing: the persisted hashes are the truth."""
    index = tmp_path / "state" / "src.index"
    files = [write(h.root / f"p{i % 3}" / f"f{i}.go", f"package p // {i}") for i in range(12)]
    # Entries hashed within RACY_WINDOW_NS of a write are never trusted (see scan.py).
    h.wait_file_clock_past(files[-1], RACY_WINDOW_NS)
    first = h.watch(index_path=index)
    fingerprint = h.fingerprint(first)
    first.stop()
    assert index.exists()
    with capture_logs() as logs:
        second = h.watch(index_path=index)
    assert index_events(logs)[0]["hashed"] == 0
    assert index_events(logs)[0]["reused"] == len(files)
    assert h.fingerprint(second) == fingerprint
    files[0].write_text(files[0].read_text())
    h.settle()
    assert files[0] not in h.reported


def test_persisted_index_is_not_trusted_when_stale(h: Harness, tmp_path: Path) -> None:
    """Files changed or touched while no watcher ran are read again; only the content change
    moves the fingerprint. A damaged index file counts as none."""
    index = tmp_path / "src.index"
    changed = write(h.root / "changed.go", "package main // v1")
    touched = write(h.root / "touched.go", "package main")
    kept = write(h.root / "kept.go", "package main // kept")
    h.wait_file_clock_past(kept, RACY_WINDOW_NS)
    first = h.watch(index_path=index)
    before = h.fingerprint(first)
    first.stop()
    changed.write_text("package main // v2")
    os.utime(touched, (1, 1))
    with capture_logs() as logs:
        second = h.watch(index_path=index)
    assert index_events(logs)[0]["hashed"] == 2
    after = h.fingerprint(second)
    second.stop()
    assert after != before
    changed.write_text("package main // v1")
    index.write_bytes(b"not an index")
    with capture_logs() as logs:
        third = h.watch(index_path=index)
    assert index_events(logs)[0]["hashed"] == 3
    assert h.fingerprint(third) == before


def test_a_watch_that_is_not_recursive_sees_only_the_top_directory(h: Harness) -> None:
    """recursive=False (the config watch): files directly in the root only, one watch."""
    top = write(h.root / "devsup.yaml", "project: a")
    deep = write(h.root / "src" / "devsup.yaml", "project: b")
    watcher = h.watch(include=["/devsup.yaml", "/sentinel_*.go"], recursive=False)
    assert watcher.watched_count == 1
    deep.write_text("project: c")
    top.write_text("project: d")
    h.settle()
    assert h.reported == {top, h.root / "sentinel_1.go"}


def test_saved_listings_spare_the_walk_and_notice_what_changed(h: Harness, tmp_path: Path) -> None:
    """A restart lists no unchanged directory again; a file added, or a .gitignore edited,
    while no watcher ran is seen all the same (the directory's signature moved)."""
    index = tmp_path / "src.index"
    write(h.root / "a" / "kept.go", "package a")
    gen = write(h.root / "b" / "deep" / "gen.go", "package deep")
    rules = write(h.root / "b" / ".gitignore", "")
    h.wait_file_clock_past(gen, RACY_WINDOW_NS)
    h.watch(index_path=index).stop()
    with capture_logs() as logs:
        h.watch(index_path=index).stop()
    assert index_events(logs)[0]["dirs"] == 4  # the root, a, b, b/deep
    assert index_events(logs)[0]["listed"] == 0
    assert index_events(logs)[0]["files"] == 2
    write(h.root / "a" / "added.go", "package a")
    rules.write_text("deep/\n")
    with capture_logs() as logs:
        third = h.watch(index_path=index)
    assert index_events(logs)[0]["files"] == 2  # kept.go and added.go; gen.go is ignored now
    fresh = h.watch()  # no saved index: walks everything
    assert h.fingerprint(third) == h.fingerprint(fresh)


class ThreadRecordingHasher:
    """hash_file, noting whether the indexer thread has read anything yet."""

    def __init__(self) -> None:
        self.indexer_read = threading.Event()

    def __call__(self, path: str) -> bytes | None:
        if threading.current_thread().name == INDEXER_THREAD:
            self.indexer_read.set()
        return hash_file(path)


def test_the_first_index_waits_until_asked_and_no_change_is_lost_meanwhile(h: Harness) -> None:
    """Until someone asks for the index (here: a fingerprint), nothing is hashed for it, and a
    file edited, deleted or created in that time is reported all the same."""
    kept = write(h.root / "a" / "kept.go", "package a")
    edited = write(h.root / "a" / "edited.go", "package a // v1")
    deleted = write(h.root / "b" / "deleted.go", "package b")
    hasher = ThreadRecordingHasher()
    watcher = h.watch(hasher=hasher, wait_indexed=False, index_delay=DEADLINE * 10)
    # start() returns before the watches exist; until they do, a change has no event (it would
    # wait for the deferred index, which is the point of the test to hold back).
    deadline = time.monotonic() + DEADLINE
    while not (watcher.observer is not None and watcher.observer.emitters):
        assert time.monotonic() < deadline, "watches never set up"
        time.sleep(0.01)
    h.settle()  # the watches are in place
    edited.write_text("package a // v2")
    deleted.unlink()
    created = write(h.root / "b" / "created.go", "package b // new")
    h.wait_reported(edited, deleted, created)
    assert not hasher.indexer_read.is_set() and not watcher.indexed
    fingerprint = h.fingerprint(watcher)  # asks: well before index_delay
    assert watcher.indexed and hasher.indexer_read.is_set()
    assert kept not in h.reported
    assert h.fingerprint(h.watch()) == fingerprint


def test_the_first_index_starts_by_itself_after_its_delay(h: Harness) -> None:
    """Nobody asking (a first build that failed), the index is built `index_delay` after the
    start, and logged as due."""
    write(h.root / "a.go", "package a")
    with capture_logs() as logs:
        watcher = h.watch(wait_indexed=False, index_delay=0.05)
        # Polling the condition itself: wait_indexed() would ask for the index.
        deadline = time.monotonic() + DEADLINE
        while not watcher.indexed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert watcher.indexed and watcher.watched_count == 1
    assert [e["event"] for e in logs if e["event"].startswith("watch.index")] == [
        "watch.index_due",
        "watch.indexed",
    ]


def test_a_file_written_while_first_read_gets_an_entry_never_trusted(h: Harness) -> None:
    """A first read (no entry to check, so no stat before it) that races a same-size write
    yields an entry whose signature never matches and the write's time; the next scan reads
    the file again."""
    path = write(h.root / "a.go", "package a // 1")
    h.wait_file_clock_past(path, RACY_WINDOW_NS)  # not racy by its age alone

    def hash_then_write(name: str) -> bytes | None:
        digest = hash_file(name)
        Path(name).write_text("package a // 2")  # same size: only ctime/mtime tell
        return digest

    entry, changed_ns = scan.entry_for(str(path), None, hasher=hash_then_write)
    assert entry is not None and entry.startswith(scan.UNTRUSTED)
    assert changed_ns == path.stat().st_ctime_ns
    again, _ = scan.entry_for(str(path), entry)
    assert again is not None and again[-16:] == hash_file(path) != entry[-16:]
