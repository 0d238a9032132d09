"""The file watcher under faults, on real inotify: a watched directory deleted and re-created, a
root missing when its watch is set up, the inotify watch limit reached (in a user namespace of
its own, so the host's limit is untouched), and 2,000 file events a second for 10 seconds."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devsupervisor.watch.watcher import SourceWatcher
from tests.faults.conftest import Marked
from tests.faults.support import start_under, wait_none_marked
from tests.harness import FakeProject, wait_until, write_atomic

pytestmark = pytest.mark.faults


def _watch(project: FakeProject, paths: list[str], include: list[str]) -> None:
    config = json.loads(project.config.read_text())
    config["platform"]["watch"].update(paths=paths, include=include)
    project.config.write_text(json.dumps(config, indent=2))


def _stop(m: Marked) -> None:
    result = m.daemon.cli("stop")
    assert result.returncode == 0, result.stderr
    assert m.daemon.proc is not None and m.daemon.proc.wait(timeout=30) == 0
    wait_none_marked(m.mark)


# --- the watcher itself -------------------------------------------------------------------------


class Reports:
    """A SourceWatcher on its own loop thread, collecting what it reports."""

    def __init__(self, roots: list[Path]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.seen: set[Path] = set()
        self.watcher = SourceWatcher(roots, ["**"], [], on_change=self.seen.update, loop=self.loop)
        self.watcher.start()
        assert self.watcher.wait_indexed(10)

    def wait_for(self, path: Path, timeout: float = 10) -> None:
        wait_until(lambda: path in self.seen, timeout, what=f"{path} reported")

    def close(self) -> None:
        self.watcher.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def reports(tmp_path: Path) -> Iterator[list[Reports]]:
    made: list[Reports] = []
    yield made
    for r in made:
        r.close()


def test_root_missing_at_start_is_watched_once_it_appears(
    tmp_path: Path, reports: list[Reports]
) -> None:
    """One root exists, the other not yet: the first is watched at once, the second from the
    moment it is created (its files reported), and neither stops the other."""
    here, later = tmp_path / "here", tmp_path / "later"
    here.mkdir()
    r = Reports([here, later])
    reports.append(r)
    write_atomic(here / "a.go", "package a\n")
    r.wait_for(here / "a.go", timeout=5)
    later.mkdir()
    (later / "b.go").write_text("package b\n")
    r.wait_for(later.resolve() / "b.go")
    (later / "c.go").write_text("package c\n")  # and then by inotify, not only the rescan
    r.wait_for(later.resolve() / "c.go", timeout=2)


def test_root_deleted_and_recreated_is_watched_again(
    tmp_path: Path, reports: list[Reports]
) -> None:
    """A watched root removed (its inotify watch ends with it) and made again: its files are
    reported as they come back, and later edits too."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.go").write_text("package a\n")
    r = Reports([root])
    reports.append(r)
    shutil.rmtree(root)
    r.wait_for(root / "a.go")  # gone is a change
    r.seen.clear()
    root.mkdir()
    (root / "a.go").write_text("package a // back\n")
    r.wait_for(root / "a.go")
    r.seen.clear()
    write_atomic(root / "a.go", "package a // edited\n")
    r.wait_for(root / "a.go", timeout=3)


# --- on a real daemon ---------------------------------------------------------------------------


def test_watched_directories_deleted_and_recreated_still_build(marked: Marked) -> None:
    """A subdirectory of the root, then the root itself, removed and made again: each time the
    new content builds and serves."""
    project = marked.project
    _watch(project, [str(project.root / "src")], ["**"])
    marked.daemon.start()
    marked.daemon.wait_platform("running")
    src = project.root / "src"
    (src / "pkg").mkdir()
    (src / "pkg" / "x.txt").write_text("x\n")
    shutil.rmtree(src / "pkg")
    (src / "pkg").mkdir()
    project.set_source("v2")
    wait_until(lambda: project.version() == "v2", what="v2 after the subdirectory came back")
    shutil.rmtree(src)
    src.mkdir()
    project.set_source("v3")
    wait_until(lambda: project.version() == "v3", what="v3 after the root came back")
    events = {e["event"] for e in marked.daemon.logs_of("devsup")}
    assert {"watch.root_missing", "watch.root_watched"} <= events
    _stop(marked)


def test_watch_path_missing_at_start_is_a_config_error(marked: Marked) -> None:
    """A `platform.watch.paths` entry that does not exist: `devsup run` exits 2 with one line
    naming the key and the path (nothing started, nothing left)."""
    project = marked.project
    _watch(project, [str(project.root / "nowhere")], ["**"])
    marked.daemon.start()
    assert marked.daemon.proc is not None
    assert marked.daemon.proc.wait(timeout=30) == 2
    tail = marked.daemon.log_tail().strip().splitlines()
    assert "platform.watch.paths" in tail[-1] and "nowhere" in tail[-1], tail
    wait_none_marked(marked.mark)


# A user namespace has its own inotify limits (/proc/sys/user/max_inotify_watches), so the
# daemon runs short of watches while the host's limit stays as it is.
LOW_LIMIT = 'echo "$WATCHES" > /proc/sys/user/max_inotify_watches && exec "$@"'


def test_inotify_watch_limit_falls_back_to_polling(marked: Marked) -> None:
    """Past the inotify watch limit the root is polled: `watch.limit_reached` says so with the
    sysctl to raise, and a save still builds and serves."""
    project = marked.project
    for n in range(30):
        (project.root / "src" / f"pkg{n}").mkdir()
    marked.daemon.env["WATCHES"] = "10"
    start_under(
        marked.daemon,
        ["unshare", "--user", "--map-root-user", "sh", "-c", LOW_LIMIT, "sh"],
    )
    marked.daemon.wait_platform("running")
    limit = wait_until(
        lambda: [e for e in marked.daemon.logs_of("devsup") if e["event"] == "watch.limit_reached"],
        what="watch.limit_reached",
    )[0]
    assert limit["root"] == str(project.root.resolve())
    assert "max_user_watches" in limit["error"] and "sysctl" in limit["hint"]
    project.set_source("v2")
    wait_until(lambda: project.version() == "v2", timeout=10, what="v2 by polling")
    (project.root / "src" / "pkg29" / "deep.txt").write_text("a file no watch covers\n")
    marked.daemon.wait_event("change.detected", count=2, timeout=10)
    _stop(marked)


# --- a flood of events --------------------------------------------------------------------------

FLOOD_RATE = 2000  # file writes (close events) per second
FLOOD_SECONDS = 10
FLOOD_FILES = 200
# Rewrites FILES files round-robin at RATE a second for SECONDS; prints how many it wrote.
FLOOD_WRITER = """
import sys, time
from pathlib import Path
flood, rate, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
files = sorted(flood.iterdir())
started, written = time.monotonic(), 0
while (elapsed := time.monotonic() - started) < seconds:
    while written < int(elapsed * rate):
        files[written % len(files)].write_text(f"{written}\\n")
        written += 1
    time.sleep(0.001)
print(written)
"""


def test_two_thousand_events_a_second_for_ten_seconds(marked: Marked) -> None:
    """2,000 file writes a second for 10 s: status answers quickly throughout, the daemon's
    memory stays bounded, builds coalesce (a handful, never one per change), and the last
    content is what serves afterwards."""
    project = marked.project
    flood = project.root / "src" / "flood"
    flood.mkdir()
    for n in range(FLOOD_FILES):
        (flood / f"f{n}.txt").write_text("0\n")
    (project.root / "build_delay").write_text("0.3")
    daemon = marked.daemon
    daemon.start()
    daemon.wait_platform("running")
    assert daemon.proc is not None
    proc = psutil.Process(daemon.proc.pid)
    rss_before = proc.memory_info().rss
    builds_before = project.builds("started")
    # The writer is a process of its own: in this one it would share the GIL with the polling.
    writer = subprocess.Popen(
        [sys.executable, "-c", FLOOD_WRITER, str(flood), str(FLOOD_RATE), str(FLOOD_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    latencies: list[float] = []
    peak_rss = rss_before
    try:
        while writer.poll() is None:
            asked = time.monotonic()
            daemon.status()
            latencies.append(time.monotonic() - asked)
            peak_rss = max(peak_rss, proc.memory_info().rss)
            time.sleep(0.05)
    finally:
        out, _ = writer.communicate(timeout=FLOOD_SECONDS + 10)
    written = int(out)
    # Offered 2,000/s; on a loaded 2-core machine the writer itself may fall short of it.
    assert written >= 5000, f"only {written} writes: not a flood"
    project.set_source("v2")
    wait_until(lambda: project.version() == "v2", timeout=30, what="v2 after the flood")
    builds = project.builds("started") - builds_before
    median, worst = statistics.median(latencies), max(latencies)
    grown = (peak_rss - rss_before) / 2**20
    print(
        f"flood: {written} writes, {builds} builds, status median {median * 1000:.1f} ms"
        f" max {worst * 1000:.0f} ms, RSS +{grown:.1f} MB (peak {peak_rss / 2**20:.0f} MB)"
    )
    assert median < 0.1 and worst < 1.0, (median, worst)
    assert grown < 50, f"RSS grew {grown:.1f} MB"
    # Coalesced: a build starts only after `debounce` of quiet or MAX_HOLD of held changes
    # (a writer stalled by a busy machine makes quiet gaps), never one per change.
    assert 1 <= builds <= written // 200, (builds, written)
    _stop(marked)
