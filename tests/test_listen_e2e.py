"""Held listening sockets end to end: a real `devsup run` on the Go example with `listen` and
`ready: {notify: true}`, edited and killed under a steady client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil

from tests.harness import REPO, DaemonProcess, free_port, wait_until, write_atomic
from tests.test_listen import SteadyClient


def _go_project(tmp_path: Path, project: str, listen: list[str]) -> Path:
    src = tmp_path / "platform-services"
    shutil.copytree(
        REPO / "examples" / "platform-services", src, ignore=shutil.ignore_patterns("bin")
    )
    config = tmp_path / "devsup.yaml"
    config.write_text(
        json.dumps(
            {
                "project": project,
                "compose": {"files": []},
                "stacks": {"skeleton": {"platform": "binary"}},
                "platform": {
                    "watch": {"paths": ["platform-services"], "debounce": 0.05},
                    "binary": {
                        "workdir": "platform-services",
                        "build": "go build -o bin/platform ./cmd",
                        "run": "exec ./bin/platform",
                        # The fallback bind would fail loudly: the platform must inherit.
                        "env": {"PLATFORM_ADDR": "127.0.0.1:1"},
                        "listen": listen,
                        "ready": {"notify": True, "timeout": 30},
                        "stop_timeout": 5,
                    },
                },
            }
        )
    )
    return config


def _set_version(main: Path, version: str) -> None:
    text = main.read_text()
    start = text.index('const version = "') + len('const version = "')
    end = text.index('"', start)
    write_atomic(main, text[:start] + version + text[end:])


def test_reloads_and_kills_through_devsup_run_lose_no_request(
    tmp_path: Path, project_name: str
) -> None:
    """15 edits (overlap swaps) and 2 SIGKILLs (crash restarts) under `devsup run` with
    `listen`: no failed request, LISTEN_PID is each platform's pid."""
    port = free_port()
    config = _go_project(tmp_path, project_name, [f"127.0.0.1:{port}"])
    main = tmp_path / "platform-services" / "cmd" / "main.go"
    daemon = DaemonProcess(config, project=project_name)
    try:
        daemon.start()
        pid = daemon.wait_platform("running", timeout=120)["platform"]["pid"]
        assert psutil.Process(pid).environ()["LISTEN_PID"] == str(pid)
        marks: list[str] = []  # when each edit and kill happened, to place a failure
        with SteadyClient((socket.AF_INET, ("127.0.0.1", port))) as client:
            for i in range(2, 19):
                if i in (7, 13):
                    client.between_requests(lambda pid=pid: os.kill(pid, signal.SIGKILL))
                    marks.append(f"{time.monotonic():.3f} killed {pid}")
                    pid = wait_until(
                        lambda old=pid: (
                            (p := daemon.status()["platform"])["state"] == "running"
                            and p["pid"] not in (None, old)
                            and p["pid"]
                        ),
                        timeout=30,
                        what="crash restart",
                    )
                    continue
                _set_version(main, f"v{i}")
                marks.append(f"{time.monotonic():.3f} saved v{i}")
                wait_until(lambda v=f"v{i}": v in client.versions, timeout=60, what=f"v{i} served")
                pid = daemon.wait_platform("running")["platform"]["pid"]
                assert psutil.Process(pid).environ()["LISTEN_PID"] == str(pid)
            served = client.ok
            wait_until(lambda: client.ok > served + 5, what="requests after the last swap")
            client.stop()
        assert client.failures == [], (client.failures[:5], marks)
        assert client.ok > 100
        names = daemon.event_names()
        assert names.count("platform.reloaded") >= 16  # startup + 15 edits
        assert names.count("platform.exited") == 2
    finally:
        assert daemon.stop() == 0, daemon.log_tail()


def test_port_taken_by_a_stranger_is_reported(tmp_path: Path, project_name: str) -> None:
    """A `listen` port another process holds fails the platform's start with a clear reason."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        address = f"127.0.0.1:{stranger.getsockname()[1]}"
        daemon = DaemonProcess(_go_project(tmp_path, project_name, [address]), project=project_name)
        try:
            daemon.start()
            failed = daemon.wait_event("platform.start_failed", timeout=120)[0]
            assert failed["error"] == f"platform.binary.listen: {address} is already in use"
            assert daemon.status()["platform"]["state"] in ("crashed", "crashloop", "starting")
        finally:
            assert daemon.stop() == 0, daemon.log_tail()


def test_new_build_crashing_on_start_leaves_the_old_one_serving(
    tmp_path: Path, project_name: str
) -> None:
    """Overlap swap: a new build that exits at start never takes over; the old process serves
    on, no request fails, and the next good edit swaps in."""
    port = free_port()
    config = _go_project(tmp_path, project_name, [f"127.0.0.1:{port}"])
    main = tmp_path / "platform-services" / "cmd" / "main.go"
    daemon = DaemonProcess(config, project=project_name)
    try:
        daemon.start()
        old = daemon.wait_platform("running", timeout=120)["platform"]["pid"]
        good = main.read_text()
        with SteadyClient((socket.AF_INET, ("127.0.0.1", port))) as client:
            write_atomic(main, good.replace("func main() {", "func main() {\n\tos.Exit(3)", 1))
            failed = daemon.wait_event("platform.swap_failed", timeout=60)[0]
            assert failed["kept"] == old
            status = daemon.wait_platform("running")
            assert status["platform"]["pid"] == old
            write_atomic(main, good.replace('const version = "v1"', 'const version = "v2"'))
            wait_until(lambda: "v2" in client.versions, timeout=60, what="v2 served")
            served = client.ok
            wait_until(lambda: client.ok > served + 5, what="requests after the swap")
            client.stop()
        assert client.failures == [], client.failures[:5]
        assert client.versions == {"v1", "v2"}
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
