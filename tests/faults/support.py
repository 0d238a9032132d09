"""Helpers of the fault suite: find every process a daemon left behind, read systemd's notify
datagrams, start a daemon under a command prefix (a private mount namespace, a PATH).

Every daemon here runs with a unique `DEVSUP_FAULT_MARK` in its environment; whatever it starts
(platform, helpers that double-fork or call setsid, builds, compose children) inherits it, so
"no orphans" is checked by looking for that mark in every process of the machine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from tests.harness import DaemonProcess

MARK = "DEVSUP_FAULT_MARK"


def mark_env(env: dict[str, str]) -> str:
    """Give `env` a fresh mark; returns it."""
    mark = uuid.uuid4().hex
    env[MARK] = mark
    return mark


def marked_processes(mark: str) -> list[psutil.Process]:
    """Live (non-zombie) processes carrying `mark` in their environment."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(MARK) == mark:
                found.append(proc)
        except psutil.Error:
            continue  # gone meanwhile, or a kernel thread
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} ppid={proc.ppid()} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            out.append(f"{proc.pid} (gone)")
    return out


def wait_none_marked(mark: str, timeout: float = 10.0) -> None:
    """Fail naming the leftovers unless every process with `mark` is gone within `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"orphans left behind: {describe(left)}"


def kill_marked(mark: str) -> None:
    """Clean-up after a failed test: nothing with the mark survives it."""
    for proc in marked_processes(mark):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def start_under(daemon: DaemonProcess, prefix: list[str], *extra: str) -> None:
    """Start `daemon` as `PREFIX... python -m devsupervisor run ...` (the prefix execs it)."""
    out = daemon.output.open("ab")
    daemon.proc = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "devsupervisor",
            "run",
            "--config",
            str(daemon.config),
            *extra,
        ],
        env=daemon.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=daemon.config.parent,
    )
    out.close()


class NotifyListener:
    """A systemd notify socket (NOTIFY_SOCKET) that collects the daemon's datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float = 30.0) -> bool:
        """Read datagrams until one contains `text` (True) or `timeout` passes (False)."""
        if any(text in m for m in self.messages):
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(data)
            if text in data:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
