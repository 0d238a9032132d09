"""When devsup builds, end to end through the real watcher: what does and does not trigger one."""

from __future__ import annotations

import os

from tests.harness import DaemonProcess, FakeProject, wait_until


def _start(daemon: DaemonProcess, project: FakeProject) -> None:
    daemon.start()
    daemon.wait_platform("running")
    assert project.version() == "v1"


def test_same_content_saves_build_nothing(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """A touch or a same-content rewrite starts no build; the next real edit starts one."""
    _start(daemon, fake_project)
    before = fake_project.builds("started")
    app = fake_project.root / "src" / "app.txt"
    os.utime(app)
    # In place first: a truncating rewrite is briefly empty, and hashing it in that moment (for
    # an earlier event) would rightly see a change.
    app.write_text("v1\n")  # same bytes, rewritten in place
    fake_project.set_source("v1")  # same bytes, saved by rename
    fake_project.set_source("v2")  # the marker: a real change
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")
    assert fake_project.builds("started") == before + 1
    assert daemon.event_names().count("build.started") == 2  # startup + v2


def test_lone_save_builds_without_waiting_for_debounce(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """With a long debounce, a single save still builds at once (leading edge)."""
    fake_project.debounce = 3.0
    fake_project.write_config()
    _start(daemon, fake_project)
    fake_project.set_source("v2")
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")
    daemon.wait_event("platform.reloaded", count=2)  # startup, then this save
    reload = daemon.status()["platform"]["last_reload"]
    assert reload["detect"] < 1.0, reload


def test_burst_of_500_files_swaps_in_one_build(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """A checkout touching 500 files (while a build of realistic length runs) ends in exactly
    one build that is swapped in, serving the final state."""
    src = fake_project.root / "src"
    for i in range(500):
        (src / f"f{i:03}.txt").write_text("old\n")
    (fake_project.root / "build_delay").write_text("0.5")
    _start(daemon, fake_project)
    reloads_before = daemon.event_names().count("platform.reloaded")
    # Like git: every file rewritten in place (a rename pair can sit in watchdog's buffer for
    # up to 0.5 s waiting for its other half, which is not what a checkout does).
    for i in range(500):
        (src / f"f{i:03}.txt").write_text("new\n")
    (src / "app.txt").write_text("v2\n")
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")
    # Let the settle window pass and make sure nothing else follows: a marker edit builds once.
    fake_project.set_source("v3")
    wait_until(lambda: fake_project.version() == "v3", what="v3 served")
    daemon.wait_event("platform.reloaded", count=reloads_before + 2)
    names = daemon.event_names()
    assert names.count("platform.reloaded") == reloads_before + 2  # the burst, then v3
    assert names.count("build.succeeded") == names.count("platform.reloaded")


def test_change_during_build_cancels_it(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """A change while a build runs cancels it; the build of the newest sources is swapped in."""
    _start(daemon, fake_project)
    (fake_project.root / "build_delay").write_text("2")
    fake_project.set_source("v2")
    daemon.wait_event("build.started", count=2)
    fake_project.set_source("v3")
    daemon.wait_event("build.cancelled")
    wait_until(lambda: fake_project.version() == "v3", what="v3 served")
    # The new process answers a moment before devsup's own ready check logs the reload.
    daemon.wait_event("platform.reloaded", count=2)
    names = daemon.event_names()
    assert names.count("platform.reloaded") == 2  # startup and v3, never v2
    assert fake_project.builds("done") == 2


def test_build_outputs_never_trigger_a_build(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """Watching everything, the file the build writes (-o) starts no further build."""
    fake_project.include = ["**/*"]
    fake_project.ignore = []
    fake_project.write_config()
    _start(daemon, fake_project)
    fake_project.set_source("v2")
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")
    fake_project.set_source("v3")  # marker: the next build is this one, not a feedback build
    wait_until(lambda: fake_project.version() == "v3", what="v3 served")
    assert daemon.event_names().count("build.started") == 3


def test_pause_holds_changes_until_resume(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """While paused a change is counted as pending and not built; resume builds it."""
    _start(daemon, fake_project)
    assert daemon.cli("pause").returncode == 0
    fake_project.set_source("v2")
    status = wait_until(
        lambda: (s := daemon.status())["watcher"]["pending"] == 1 and s, what="pending change"
    )
    assert status["watcher"]["paused"] is True
    assert daemon.event_names().count("build.started") == 1
    assert daemon.cli("resume").returncode == 0
    wait_until(lambda: fake_project.version() == "v2", what="v2 served after resume")
