"""Test harness: a real `devsup run` subprocess on a throwaway project, and condition waits.

The daemon runs exactly as users run it (`python -m devsupervisor run --config ...`) with its
runtime, state and config homes in a short private temp dir, so tests never see each other's
sockets and the AF_UNIX path stays under its 107-byte limit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from devsupervisor.control.client import Client

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the thing polled may not exist yet
            last_exc = exc
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode().strip())
    except OSError:
        return None


def private_env() -> dict[str, str]:
    """Environment with XDG dirs in a fresh short temp dir (socket path limit)."""
    base = Path(tempfile.mkdtemp(prefix="ds", dir="/tmp"))
    env = dict(os.environ)
    for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        (base / name.lower()).mkdir()
        env[name] = str(base / name.lower())
    env.pop("NOTIFY_SOCKET", None)
    env.pop("DEVSUP_CONFIG", None)
    env["PYTHONPATH"] = str(REPO)
    return env


def write_atomic(path: Path, text: str) -> None:
    """Save like an editor does: write a temp file, rename it over the target."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


class FakeProject:
    """A throwaway platform project using the fake build and fake platform fixtures."""

    def __init__(self, root: Path, *, project: str, port: int | None = None) -> None:
        self.root = root
        self.project = project
        self.port = port or free_port()
        (root / "src").mkdir(parents=True)
        (root / "src" / "app.txt").write_text("v1\n")
        self.config = root / "devsup.yaml"
        self.stop_timeout = 2
        self.run = f"exec {sys.executable} {FIXTURES / 'fakeplatform.py'}"
        self.build = f"sh {FIXTURES / 'fakebuild.sh'} -o bin/app.txt"
        self.ready: dict[str, Any] = {
            "http": f"http://127.0.0.1:{self.port}/healthz",
            "timeout": 10,
        }
        self.include = ["src/**"]
        self.ignore = ["bin/**"]
        self.debounce = 0.1
        self.build_log = root.parent / f"builds-{project}.log"
        self.write_config()

    def write_config(self, **overrides: Any) -> None:
        cfg: dict[str, Any] = {
            "project": self.project,
            "compose": {"files": []},
            "stacks": {"skeleton": {"platform": "binary"}},
            "platform": {
                "watch": {
                    "paths": ["."],
                    "include": self.include,
                    "ignore": self.ignore,
                    "debounce": self.debounce,
                },
                "binary": {
                    "workdir": ".",
                    "build": self.build,
                    "run": self.run,
                    "env": {
                        "PLATFORM_ADDR": f"127.0.0.1:{self.port}",
                        "BUILD_LOG": str(self.build_log),
                    },
                    "ready": self.ready,
                    "stop_timeout": self.stop_timeout,
                },
            },
        }
        cfg.update(overrides)
        self.config.write_text(json.dumps(cfg, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str | None:
        return http_get(self.url + "/version")

    def set_source(self, text: str) -> None:
        write_atomic(self.root / "src" / "app.txt", text + "\n")

    def builds(self, kind: str = "done") -> int:
        if not self.build_log.exists():
            return 0
        return sum(1 for line in self.build_log.read_text().splitlines() if line.startswith(kind))


class DaemonProcess:
    """`devsup run` as a child process; `stop()` always leaves nothing behind."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None, project: str) -> None:
        self.config = config
        self.env = env or private_env()
        self.project = project
        self.proc: subprocess.Popen[bytes] | None = None
        # Outside the project dir: a watched tree must not contain the daemon's own output.
        self.output = config.parent.parent / f"devsup-{project}.out"
        self._children: set[int] = set()

    @property
    def socket(self) -> Path:
        return Path(self.env["XDG_RUNTIME_DIR"]) / "devsup" / f"{self.project}.sock"

    def start(self, *extra: str) -> DaemonProcess:
        out = self.output.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devsupervisor", "run", "--config", str(self.config), *extra],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,
        )
        out.close()
        return self

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devsupervisor", *args, "--project", self.project],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(self, timeout: float | None = 10) -> Client:
        return Client(self.socket, timeout=timeout)

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            result: dict[str, Any] = c.call("status")
            pid = result["platform"]["pid"]
            if pid:
                self._children.add(pid)
            return result

    def events(self) -> list[dict[str, Any]]:
        with self.client() as c:
            return list(c.call("events"))

    def logs_of(self, name: str, lines: int = 1000) -> list[dict[str, Any]]:
        with self.client() as c:
            return list(c.call("logs", {"name": name, "lines": lines}))

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def wait_platform(self, state: str, timeout: float = 30) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (s := self.status())["platform"]["state"] == state and s,
                timeout,
                f"platform state {state}",
            )
        )

    def wait_event(self, name: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        return list(
            wait_until(
                lambda: len(m := [e for e in self.events() if e["event"] == name]) >= count and m,
                timeout,
                f"{count}x event {name}",
            )
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, then kill whatever is left (the daemon and any platform it started)."""
        if self.proc is None:
            return None
        code: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            code = self.proc.returncode
        for pid in self._children:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.Error:
                pass
        return code

    def log_tail(self, chars: int = 4000) -> str:
        return self.output.read_text(errors="replace")[-chars:] if self.output.exists() else ""
