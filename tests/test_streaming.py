"""`devsup logs -f` / `events -f`: several live followers, and a stalled one never stalls the
daemon (bounded buffers, a drop marker instead)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from tests.harness import DaemonProcess, FakeProject, http_get, wait_until


def test_three_followers_stream_while_a_fourth_never_reads(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """Three `logs -f` followers stream a 20,000-line flood to its end (or a drop marker when
    they fell behind); a fourth connection that never reads does not slow status answers or
    the platform."""
    daemon.start()
    daemon.wait_platform("running")
    followers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devsupervisor",
                "logs",
                "platform",
                "-f",
                "-n",
                "5",
                "--project",
                daemon.project,
            ],
            env=daemon.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    stalled = socket.socket(socket.AF_UNIX)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        stalled.connect(str(daemon.socket))
        request = {"id": 1, "cmd": "logs", "args": {"name": "platform", "follow": True}}
        stalled.sendall(json.dumps(request).encode() + b"\n")
        wait_until(lambda: daemon.status()["platform"]["state"] == "running", what="daemon answers")
        assert http_get(fake_project.url + "/spam/20000", timeout=30) == "ok"
        started = time.monotonic()
        daemon.status()
        assert time.monotonic() - started < 5  # the stalled follower holds nothing up
        for follower in followers:
            assert follower.stdout is not None
            # A follower that fell behind gets a drop marker instead of the lines it missed;
            # either way it keeps streaming to the end of the flood.
            for line in follower.stdout:
                if line.rstrip().endswith("spam done") or "stream.dropped" in line:
                    break
            else:
                raise AssertionError("follower ended before the flood's end")
        assert fake_project.version() == "v1"
    finally:
        stalled.close()
        for follower in followers:
            follower.terminate()
            follower.wait(timeout=10)
            if follower.stdout is not None:
                follower.stdout.close()


def test_events_follow_sees_a_rebuild(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """`devsup events -f` prints build events as JSON lines while they happen."""
    daemon.start()
    daemon.wait_platform("running")
    follower = subprocess.Popen(
        [sys.executable, "-m", "devsupervisor", "events", "-f", "--project", daemon.project],
        env=daemon.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        # The backlog's first line proves the follower is subscribed before the rebuild.
        assert json.loads(follower.stdout.readline())["event"] == "daemon.started"
        assert daemon.cli("rebuild").returncode == 0
        seen = []
        for line in follower.stdout:
            event = json.loads(line)
            seen.append(event["event"])
            if event["event"] == "build.succeeded" and event["trigger"] == ["manual"]:
                break
        assert "build.started" in seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()
