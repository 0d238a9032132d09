"""Fixtures of the fault suite: a daemon whose every descendant carries a mark, and a notify
socket, both cleaned up whatever the test did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import NotifyListener, kill_marked, mark_env
from tests.harness import DaemonProcess, FakeProject, private_env


class Marked:
    """A daemon (not yet started) on `project`, its mark and its notify socket."""

    def __init__(self, project: FakeProject, notify: NotifyListener) -> None:
        self.project = project
        self.notify = notify
        env = private_env()
        env["NOTIFY_SOCKET"] = str(notify.path)
        self.mark = mark_env(env)
        self.daemon = DaemonProcess(project.config, env=env, project=project.project)


@pytest.fixture
def marked(fake_project: FakeProject, tmp_path: Path) -> Iterator[Marked]:
    notify = NotifyListener(tmp_path / "notify.sock")
    m = Marked(fake_project, notify)
    try:
        yield m
    finally:
        m.daemon.stop()
        kill_marked(m.mark)
        notify.close()
