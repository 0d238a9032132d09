"""The demo stack on a remote engine, end to end: `engine: {host: ssh://...}` against the stand-in.

The stand-in (`tests.remote_host`) is a network namespace with its own dockerd and sshd, reached
from here only over SSH; its published ports are out of reach except through devsup's forwards.
The daemon finds the throw-away ssh config through an `ssh` wrapper first on its PATH, as a user's
ssh config would be found. The same flow on the local engine gives the floor the remote figures
are compared with (printed; the README quotes them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.docker_env import (
    PLATFORM_DIR,
    STANDIN_IMAGE,
    demo_images,
    demo_port_env,
    remove_project,
    run,
    unique_project,
)
from tests.harness import DaemonProcess, http_get, private_env, wait_until
from tests.remote_host import RemoteHost, remote_host
from tests.stack_env import set_version, write_config

__all__ = ["demo_images"]  # fixture used by name

BASE = {"redpanda", "postgres"}
FULLSTACK = BASE | {"traefik", "emqx", "ai-inference", "platform"}
# Bring-up on a loaded 2-core box: engine start, image build on the remote, healthchecks.
UP_DEADLINE = 180.0
# ssh reconnects 0.5 s after a loss; the events stream's backoff tops out at 10 s.
BACK_DEADLINE = 60.0


@dataclass
class Figures:
    """Latencies measured in one run (seconds), printed at the end of a test."""

    engine: str
    status: list[float] = field(default_factory=list)
    switch: float = 0.0
    reload: float = 0.0
    reload_breakdown: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        status_ms = statistics.median(self.status) * 1000 if self.status else 0.0
        return (
            f"{self.engine}: status {status_ms:.1f} ms (median of {len(self.status)}), "
            f"switch skeleton->fullstack {self.switch:.2f} s, container reload {self.reload:.2f} s "
            f"{json.dumps(self.reload_breakdown)}"
        )


@dataclass
class RemoteDemo:
    daemon: DaemonProcess
    name: str
    sources: Path
    ports: dict[str, str]
    image: str
    seed: Path

    def url(self, var: str) -> str:
        return f"http://127.0.0.1:{self.ports[var]}"

    def edit_version(self, value: str) -> None:
        set_version(self.sources, value)


def _demo(tmp_path: Path, engine: dict[str, str] | None, env: dict[str, str]) -> RemoteDemo:
    """A demo-stack project whose base files add a bind mount and whose host binary's run
    command fetches postgres's /healthz through 127.0.0.1 (recorded in `dep.txt`)."""
    name = unique_project("rs")
    sources = tmp_path / "platform-services"
    shutil.copytree(PLATFORM_DIR, sources, ignore=shutil.ignore_patterns("bin"))
    seed = tmp_path / "seed"
    seed.mkdir()
    bind = tmp_path / "bind.yaml"
    bind.write_text(f"services:\n  postgres:\n    volumes:\n      - {seed}:/seed:ro\n")
    ports = demo_port_env()
    image = f"devsup-test/{name}:local"
    config = tmp_path / "devsup.yaml"
    write_config(config, name, sources, ports["PLATFORM_PORT"])
    data: dict[str, Any] = json.loads(config.read_text())
    data["compose"]["files"] = ["docker-compose.yaml", str(bind)]
    probe = (
        "import sys, time, urllib.request\n"
        "for _ in range(600):\n"
        "    try:\n"
        "        body = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
        "else:\n"
        "    body = 'unreachable'\n"
        "open('dep.txt', 'w').write(body)\n"
    )
    (sources / "probe.py").write_text(probe)
    postgres = f"http://127.0.0.1:{ports['DEMO_POSTGRES_PORT']}/healthz"
    # In the background (stopped with the platform's tree): the platform starts without it.
    data["platform"]["binary"]["run"] = (
        f"{sys.executable} probe.py {postgres} & exec ./bin/platform"
    )
    data["platform"]["watch"]["ignore"] = ["bin/**", "dep.txt", "probe.py"]
    if engine is not None:
        data["engine"] = engine
    config.write_text(json.dumps(data, indent=2))
    daemon_env = {
        **private_env(),
        **ports,
        "PLATFORM_CONTEXT": str(sources),
        "PLATFORM_IMAGE": image,
        **env,
    }
    daemon_env.pop("DOCKER_CONTEXT", None)
    daemon = DaemonProcess(config, env=daemon_env, project=name)
    return RemoteDemo(daemon, name, sources, ports, image, seed)


@pytest.fixture(scope="module")
def remote(demo_images: None) -> Iterator[RemoteHost]:
    """The stand-in machine, holding the stand-in image (the platform image it builds itself)."""
    with remote_host([STANDIN_IMAGE]) as host:
        yield host


def _healthy(status: dict[str, Any], names: set[str]) -> bool:
    services = {s["name"]: s for s in status["services"]}
    return (
        status["state"] == "running"
        and status["platform"]["state"] == "running"
        and set(services) == names - {"platform"}
        and all(
            s["state"] == "running" and s["health"] in ("healthy", "none")
            for s in services.values()
        )
    )


def _wait_healthy(demo: RemoteDemo, names: set[str], timeout: float, what: str) -> dict[str, Any]:
    try:
        return dict(
            wait_until(
                lambda: (s := demo.daemon.status()) and _healthy(s, names) and s,
                timeout,
                what,
            )
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nstatus: {demo.daemon.status()}\n{demo.daemon.log_tail()}"
        ) from None


def _ssh_master(project: str) -> psutil.Process:
    """The daemon's ssh control master (its command line names the project's control path)."""
    marker = f"engine-{project}/ssh.ctl"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "-M" in cmdline and any(marker in arg for arg in cmdline):
            return proc
    raise AssertionError(f"no ssh master with {marker} on its command line")


def _measure(demo: RemoteDemo, figures: Figures) -> None:
    """Status latency with services, a switch to fullstack, and a container reload."""
    for _ in range(10):
        started = time.perf_counter()
        demo.daemon.status()
        figures.status.append(time.perf_counter() - started)
    started = time.monotonic()
    switched = demo.daemon.cli("switch", "fullstack", timeout=300)
    figures.switch = time.monotonic() - started
    assert switched.returncode == 0, f"{switched.stdout}\n{switched.stderr}"
    status = _wait_healthy(demo, FULLSTACK, UP_DEADLINE, "fullstack healthy")
    assert status["platform"]["mode"] == "container"
    try:
        wait_until(
            lambda: http_get(demo.url("PLATFORM_PORT") + "/version") == "v1",
            30,
            "the platform container serving v1 on 127.0.0.1",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{_engine_events(demo)}\n{demo.daemon.status()['engine']}"
        ) from None
    started = time.monotonic()
    demo.edit_version("v2")
    wait_until(
        lambda: http_get(demo.url("PLATFORM_PORT") + "/version") == "v2",
        UP_DEADLINE,
        "v2 served by the rebuilt container",
    )
    figures.reload = time.monotonic() - started
    reload = demo.daemon.status()["platform"]["last_reload"] or {}
    figures.reload_breakdown = {k: round(v, 2) for k, v in reload.items()}


@pytest.mark.docker
def test_demo_stack_runs_on_the_remote_engine_over_one_connection(
    remote: RemoteHost, tmp_path: Path
) -> None:
    """Up remotely, reached through forwards, one ssh connection, survives a killed ssh, bind
    mount reported, switch and container reload measured, `stop --down` leaves it clean."""
    path = f"{remote.wrapper_dir()}:{os.environ['PATH']}"
    env = {"PATH": path}
    env_without_host = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    demo = _demo(tmp_path, {"host": remote.url}, {**env_without_host, **env})
    demo.daemon.env.pop("DOCKER_HOST", None)
    figures = Figures("remote")
    connections_before = remote.accepted_connections()
    try:
        demo.daemon.start()
        up = _wait_healthy(demo, BASE, UP_DEADLINE, "base services healthy on the remote engine")
        assert up["engine"]["host"] == remote.url and up["engine"]["connected"] is True
        # The containers run over there, not on this machine's engine.
        remote_names = remote.dockerd.docker(
            "ps", "--filter", f"label=com.docker.compose.project={demo.name}", "--format",
            '{{.Label "com.docker.compose.service"}}',
        ).stdout.split()  # fmt: skip
        assert set(remote_names) == BASE
        here = run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={demo.name}"]
        )
        assert here.stdout.split() == [], "containers on the local engine"
        # The host binary's command reached postgres through the forward.
        dep = demo.sources / "dep.txt"
        wait_until(lambda: dep.exists() and dep.read_text().strip(), 30, "the host binary's probe")
        assert dep.read_text().strip() == "ok"
        assert http_get(demo.url("DEMO_POSTGRES_PORT") + "/healthz") == "ok"
        assert http_get(demo.url("PLATFORM_PORT") + "/version") == "v1"
        # Not reachable on the stand-in's address: only the forward gets there.
        direct = f"http://{remote.address}:{demo.ports['DEMO_POSTGRES_PORT']}/healthz"
        assert http_get(direct, timeout=1) is None
        # The bind mount of a path of this machine: an event and a status warning.
        names = demo.daemon.event_names()
        assert "stack.bind_mount" in names
        assert any(str(demo.seed) in w for w in up["engine"]["warnings"]), up["engine"]

        # Ten client commands, and what the daemon sends the engine meanwhile: no new connection.
        assert remote.accepted_connections() - connections_before == 1
        for args in [("status",), ("events",), ("logs", "devsup", "-n", "5")] * 3 + [("status",)]:
            done = demo.daemon.cli(*args)
            assert done.returncode == 0, f"{args}: {done.stderr}"
        assert remote.accepted_connections() - connections_before == 1
        shown = demo.daemon.cli("status").stdout
        assert f"engine   {remote.url}   connected" in shown, shown
        assert f"engine   ! service postgres bind-mounts {demo.seed}" in shown, shown

        # The ssh process killed: lost, reconnected, the stack reconciled, forwards back.
        _ssh_master(demo.name).send_signal(signal.SIGKILL)
        demo.daemon.wait_event("docker.ssh_lost", timeout=20)
        demo.daemon.wait_event("docker.ssh_connected", count=2, timeout=BACK_DEADLINE)
        _wait_healthy(demo, BASE, BACK_DEADLINE, "stack healthy after the reconnect")
        wait_until(
            lambda: http_get(demo.url("DEMO_POSTGRES_PORT") + "/healthz") == "ok",
            BACK_DEADLINE,
            "postgres reachable through the restored forward",
        )
        assert demo.daemon.status()["engine"]["connected"] is True
        assert remote.accepted_connections() - connections_before == 2

        _measure(demo, figures)

        stopped = demo.daemon.cli("stop", "--down", timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert demo.daemon.proc is not None and demo.daemon.proc.wait(timeout=60) == 0
        left = [
            item
            for item in remote.leftovers()
            if demo.name in item and not item.startswith("volume:")  # volumes are kept by design
        ]
        assert left == [], left
        assert not _masters_left(demo.name)
        connections = remote.accepted_connections() - connections_before
        print(f"\n{figures.line()}; ssh connections: {connections}")
    finally:
        demo.daemon.stop()
        remote.dockerd.remove_project(demo.name)
        remote.dockerd.docker("rmi", "-f", demo.image)


@pytest.mark.docker
def test_the_same_flow_on_the_local_engine_is_the_floor(tmp_path: Path, demo_images: None) -> None:
    """The local engine's figures for the same switch and container reload (the comparison)."""
    demo = _demo(tmp_path, None, {})
    figures = Figures("local")
    try:
        demo.daemon.start()
        up = _wait_healthy(demo, BASE, UP_DEADLINE, "base services healthy on the local engine")
        assert up["engine"]["connected"] is True and up["engine"]["warnings"] == []
        _measure(demo, figures)
        print(f"\n{figures.line()}")
    finally:
        demo.daemon.stop()
        remove_project(demo.name)
        run(["docker", "rmi", "-f", demo.image], timeout=60)


def _masters_left(project: str) -> bool:
    try:
        _ssh_master(project)
    except AssertionError:
        return False
    return True


def _engine_events(demo: RemoteDemo) -> str:
    """The daemon's engine and forward events, one per line (for failure messages)."""
    return "\n".join(
        json.dumps(e)
        for e in demo.daemon.events()
        if e["event"].startswith(("stack.forward", "docker.", "stack.bind", "platform."))
    )


@pytest.mark.docker
def test_a_machine_unreachable_at_start_is_joined_once_it_answers(
    remote: RemoteHost, tmp_path: Path
) -> None:
    """sshd silent at start: the host platform runs anyway (degraded, engine not connected);
    once the machine answers, devsup connects and brings the services up."""
    assert remote.veth is not None
    block = ["INPUT", "1", "-i", remote.veth.ns_if, "-p", "tcp", "--dport", "22", "-j", "DROP"]
    blocked = remote.netns.run(["iptables", "-I", *block])
    assert blocked.returncode == 0, blocked.stderr
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env["PATH"] = f"{remote.wrapper_dir()}:{os.environ['PATH']}"
    demo = _demo(tmp_path, {"host": remote.url}, env)
    demo.daemon.env.pop("DOCKER_HOST", None)
    try:
        started = time.monotonic()
        demo.daemon.start()
        try:
            alone = wait_until(
                lambda: (s := demo.daemon.status())["platform"]["state"] == "running" and s,
                60,
                "the host platform running without the remote machine",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{demo.daemon.log_tail()}") from None
        platform_after = time.monotonic() - started
        assert alone["engine"]["connected"] is False
        assert alone["state"] == "degraded"
        unblocked = remote.netns.run(["iptables", "-D", *[a for a in block if a != "1"]])
        assert unblocked.returncode == 0, unblocked.stderr
        _wait_healthy(demo, BASE, 120, "services up once the machine answers")
        assert demo.daemon.status()["engine"]["connected"] is True
        print(f"\nplatform running {platform_after:.1f} s after start without the machine")
    finally:
        remote.netns.run(["iptables", "-D", *[a for a in block if a != "1"]])
        demo.daemon.stop()
        remote.dockerd.remove_project(demo.name)
        remote.dockerd.docker("rmi", "-f", demo.image)
