"""A Docker engine of a test's own: a `dockerd` under a private temp root, stopped at will.

Tests that stop and start the engine must never touch the machine's engine, so this one gets its
own data root, exec root (its containerd lives there too), pidfile and API socket, and runs in a
network namespace of its own (`tests.netns`): started in the host's namespace, `--bridge=none`
makes dockerd delete the system engine's `docker0`. In its namespace it has no default bridge,
changes no iptables or forwarding settings, and its networks (own address pool) live and die with
the namespace. The API socket is a file, so the test and the daemon reach it from the host;
published ports are bound inside the namespace (`netns.http_get` reaches them).

Everything it started is found by pid, by its namespace or by its unique root path (dockerd,
containerd and the shims name it on their command lines) and ended by pid; `remove()` also
unmounts whatever the engine left mounted under the root and deletes the namespace it created.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from tests.netns import NetNamespace

# Outside the system engine's pools (172.17+/16, 192.168/20) and this machine's addresses.
ADDRESS_POOL = "base=10.213.0.0/16,size=24"
# A cold start (containerd boot, overlay2 checks, loading containers) takes 1-3 s here.
START_TIMEOUT = 60.0
# The engine stops its containers (stand-ins exit on SIGTERM at once) before exiting.
STOP_TIMEOUT = 30.0
# dockerd's API answers /_ping with this body.
PING_OK = b"OK"


class PrivateDockerd:
    """One `dockerd` rooted at `root`; keep that short (unix socket paths: 107 bytes at most).

    It runs in `netns` when given (shared with other processes, e.g. a remote-machine stand-in;
    the caller removes it), else in a namespace of its own, created here and removed by `remove()`.
    """

    def __init__(self, root: Path, netns: NetNamespace | None = None) -> None:
        self.root = root
        self.owns_netns = netns is None
        self.netns = netns if netns is not None else NetNamespace()
        self.data_root = root / "data"
        self.exec_root = root / "exec"
        self.pidfile = root / "dockerd.pid"
        self.socket = root / "docker.sock"
        self.log = root / "dockerd.log"
        self.config_file = root / "daemon.json"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The DOCKER_HOST value that reaches this engine."""
        return f"unix://{self.socket}"

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine (never the system one)."""
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_HOST")}
        return subprocess.run(
            ["docker", "-H", self.host, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the engine (same dirs as before on a restart); return once its API answers."""
        if self.is_running():
            raise RuntimeError("private dockerd already running")
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.netns.created:
            self.netns.create()
        # An empty config file of its own: /etc/docker/daemon.json is the system engine's.
        self.config_file.write_text(json.dumps({}))
        args = [
            "dockerd",
            f"--config-file={self.config_file}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            f"--default-address-pool={ADDRESS_POOL}",
        ]
        with self.log.open("ab") as out:
            # Own session: no terminal signal meant for pytest reaches the engine.
            self.proc = self.netns.popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"private dockerd exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"private dockerd silent after {START_TIMEOUT}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def answers(self) -> bool:
        """True when the engine's API answers `GET /_ping`."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
        except OSError:
            return False
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the engine and wait until it and its containerd are gone; SIGKILL at the end."""
        if self.proc is None:
            return
        own = self.own_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # dockerd ends its containerd, shims and proxies itself; whatever it left is killed here.
        _, alive = psutil.wait_procs(own, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)

    def own_processes(self) -> list[psutil.Process]:
        """dockerd's descendants plus every process naming this root on its command line."""
        found: dict[int, psutil.Process] = {}
        if self.proc is not None and self.proc.poll() is None:
            try:
                parent = psutil.Process(self.proc.pid)
                for proc in [parent, *parent.children(recursive=True)]:
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                pass
        marker = str(self.root) + "/"
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if any(marker in arg for arg in cmdline) and proc.pid != os.getpid():
                found[proc.pid] = proc
        return list(found.values())

    def remove_project(self, project: str) -> None:
        """Remove the compose project's containers, volumes and networks from this engine."""
        label = f"label=com.docker.compose.project={project}"
        containers = self.docker("ps", "-aq", "--filter", label).stdout.split()
        if containers:
            self.docker("rm", "-f", "-v", *containers)
        volumes = self.docker("volume", "ls", "-q", "--filter", label).stdout.split()
        if volumes:
            self.docker("volume", "rm", "-f", *volumes)
        networks = self.docker("network", "ls", "-q", "--filter", label).stdout.split()
        if networks:
            self.docker("network", "rm", *networks)

    def remove(self) -> None:
        """Stop the engine, then delete its mounts, its namespace (when its own) and the root."""
        self.stop()
        marker = str(self.root) + "/"
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if len(line.split()) > 1 and (line.split()[1] + "/").startswith(marker)
        ]
        for mount in sorted(mounts, key=len, reverse=True):  # deepest first
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        if self.owns_netns:
            self.netns.remove()  # the engine's bridges and veths go with it
        if self.root.is_relative_to("/tmp") and self.root != Path("/tmp"):
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
