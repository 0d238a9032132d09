"""The remote engine pieces: resolving the engine, the one ssh connection, forwards, bind mounts.

Fast tier: resolution (config, DOCKER_HOST, the docker context store) and the compose-model
readers, on data. Real tier (`docker` marker): `SshTunnel` against the remote-machine stand-in
(`tests.remote_host`: a network namespace with its own dockerd and sshd, reached over a veth pair
and nothing but SSH).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devsupervisor.config.model import EngineConfig
from devsupervisor.errors import ConfigError, DockerUnavailable
from devsupervisor.stack import compose_model, engine
from devsupervisor.stack.compose import Compose, ComposeFiles
from devsupervisor.stack.engine import EngineAddress, SshDestination
from devsupervisor.stack.engine_connection import EngineConnection
from devsupervisor.stack.local_checks import engine_answers
from devsupervisor.stack.ssh_tunnel import SshTunnel
from devsupervisor.status_types import EngineStatus
from tests.docker_env import DEMO_STACK, STANDIN_IMAGE, demo_images, free_port
from tests.harness import DaemonProcess, FakeProject, http_get, write_atomic
from tests.remote_host import RemoteHost, remote_host

__all__ = ["demo_images"]  # fixture used by name

T = TypeVar("T")
# The user network the tests' containers join on the stand-in.
NETWORK = "standins"
# Reconnect: the first retry comes 0.5 s after the loss; ssh's connect and auth take ~0.1 s here.
BACK_DEADLINE = 20.0


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# --- resolution (fast) -------------------------------------------------------------------------


def _context_store(config_dir: Path, name: str, host: str, current: str | None = None) -> None:
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}})
    )
    if current is not None:
        (config_dir / "config.json").write_text(json.dumps({"currentContext": current}))


def test_the_config_wins_over_docker_host_and_context(tmp_path: Path) -> None:
    """`engine.host` beats DOCKER_HOST, which beats the docker context, as docker orders them."""
    _context_store(tmp_path / ".docker", "box", "ssh://me@box", current="box")
    env = {"DOCKER_HOST": "tcp://1.2.3.4:2375"}
    assert engine.resolve("ssh://a@b", env, tmp_path) == EngineAddress("ssh://a@b", "config")
    assert engine.resolve(None, env, tmp_path) == EngineAddress("tcp://1.2.3.4:2375", "DOCKER_HOST")
    assert engine.resolve(None, {}, tmp_path) == EngineAddress("ssh://me@box", "context box")


def test_docker_context_env_and_docker_config_dir_are_honoured(tmp_path: Path) -> None:
    """DOCKER_CONTEXT picks the context; DOCKER_CONFIG says where the store is."""
    store = tmp_path / "elsewhere"
    _context_store(store, "one", "ssh://u@one:2200", current="one")
    _context_store(store, "two", "unix:///run/two.sock")
    env = {"DOCKER_CONFIG": str(store), "DOCKER_CONTEXT": "two"}
    assert engine.resolve(None, env, tmp_path).host == "unix:///run/two.sock"
    del env["DOCKER_CONTEXT"]
    assert engine.resolve(None, env, tmp_path).ssh == SshDestination("one", "u", 2200)


def test_no_setting_means_the_default_socket(tmp_path: Path) -> None:
    """No config, no DOCKER_HOST, the `default` or an unknown context: the local socket."""
    default = EngineAddress(engine.DEFAULT_HOST, "default")
    assert engine.resolve(None, {}, tmp_path) == default
    assert engine.resolve(None, {"DOCKER_CONTEXT": "default"}, tmp_path) == default
    assert engine.resolve(None, {"DOCKER_CONTEXT": "gone"}, tmp_path) == default
    assert default.ssh is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ssh://box", SshDestination("box")),
        ("ssh://me@box", SshDestination("box", "me")),
        ("ssh://me@10.1.2.3:2222", SshDestination("10.1.2.3", "me", 2222)),
    ],
)
def test_ssh_addresses_split_into_ssh_arguments(url: str, expected: SshDestination) -> None:
    """User and port go to ssh only when given, so the user's ssh config supplies the rest."""
    dest = engine.parse_ssh(url)
    assert dest == expected
    assert dest.args()[-1] == expected.host
    assert ("-p" in dest.args()) == (expected.port is not None)
    assert ("-l" in dest.args()) == (expected.user is not None)


@pytest.mark.parametrize(
    "url", ["ssh://", "ssh://me@box/path", "ssh://me:pw@box", "ssh://box:99999", "ssh://box?x=1"]
)
def test_bad_ssh_addresses_are_config_errors(url: str) -> None:
    """A path, a password, a bad port or no host: a config error naming the address."""
    with pytest.raises(ConfigError, match="engine address"):
        engine.parse_ssh(url)


def test_changing_the_engine_live_says_a_restart_is_needed(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """An `engine` edit applies the rest of the config and warns: the engine needs a restart."""
    daemon.start()
    status = daemon.wait_platform("running")
    assert status["engine"] == {
        "host": status["engine"]["host"],
        "connected": status["engine"]["connected"],
        "warnings": [],
    }
    config = json.loads(fake_project.config.read_text())
    config["engine"] = {"host": "ssh://me@elsewhere:2222"}
    write_atomic(fake_project.config, json.dumps(config))
    changed = daemon.wait_event("config.engine_changed")[0]
    assert changed["engine"] == "ssh://me@elsewhere:2222"
    assert "restart" in changed["action"]
    assert daemon.status()["engine"]["host"] == status["engine"]["host"]


# --- the compose model (fast) -----------------------------------------------------------------

MODEL: dict[str, Any] = {
    "services": {
        "postgres": {
            "ports": [
                {"mode": "ingress", "target": 5432, "published": "15432", "protocol": "tcp"},
                {"mode": "ingress", "target": 53, "published": "1053", "protocol": "udp"},
            ],
            "volumes": [{"type": "volume", "source": "pgdata", "target": "/data"}],
        },
        "traefik": {
            "ports": [
                {"target": 80, "published": "8080-8081", "protocol": "tcp", "host_ip": "0.0.0.0"},
                {"target": 9000, "protocol": "tcp"},  # the engine picks a port: not forwardable
            ],
            "volumes": [
                {"type": "bind", "source": "/home/me/proj/traefik.yml", "target": "/etc/t.yml"},
            ],
        },
    }
}


def test_published_tcp_ports_map_to_their_service() -> None:
    """Every published TCP port (ranges expanded) names its service; UDP and unpublished skipped."""
    assert compose_model.published_ports(MODEL) == {
        15432: "postgres",
        8080: "traefik",
        8081: "traefik",
    }
    assert compose_model.published_ports(MODEL, ["postgres"]) == {15432: "postgres"}


def test_bind_mounts_are_found_and_named() -> None:
    """A bind mount is reported with its service and path; named volumes are not."""
    mounts = compose_model.bind_mounts(MODEL)
    assert [(m.service, m.source) for m in mounts] == [("traefik", "/home/me/proj/traefik.yml")]
    assert "traefik" in mounts[0].sentence() and "remote machine" in mounts[0].sentence()


# --- the tunnel on the stand-in (real) --------------------------------------------------------


@pytest.fixture(scope="module")
def remote(demo_images: None) -> Iterator[RemoteHost]:
    """The stand-in machine, holding the stand-in image; torn down after the module."""
    with remote_host([STANDIN_IMAGE]) as host:
        # The stand-in's engine has no default bridge: containers started here join this one.
        made = host.dockerd.docker("network", "create", NETWORK)
        assert made.returncode == 0, made.stderr
        yield host


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short runtime directory (unix socket paths) for one tunnel."""
    path = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


class Reports:
    """What the tunnel reported, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.changed = asyncio.Event()

    def lost(self, reason: str) -> None:
        self.seen.append(f"lost: {reason}")
        self.changed.set()

    def back(self) -> None:
        self.seen.append("back")
        self.changed.set()

    async def wait_for(self, prefix: str, timeout: float) -> None:
        async def seen() -> None:
            while not any(s.startswith(prefix) for s in self.seen):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), timeout)


def tunnel_to(remote: RemoteHost, runtime_dir: Path, reports: Reports | None = None) -> SshTunnel:
    reports = reports or Reports()
    return SshTunnel(
        engine.parse_ssh(remote.url),
        runtime_dir,
        on_lost=reports.lost,
        on_back=reports.back,
        ssh=remote.ssh_args(),
    )


async def docker_via(tunnel: SshTunnel, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"}
    env["DOCKER_HOST"] = tunnel.docker_host
    return await asyncio.to_thread(
        subprocess.run,
        ["docker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.docker
def test_docker_commands_share_one_ssh_connection(remote: RemoteHost, runtime_dir: Path) -> None:
    """Ten docker commands through the tunnel cost one SSH connection, not ten."""

    async def scenario() -> None:
        tunnel = tunnel_to(remote, runtime_dir)
        before = remote.accepted_connections()
        await tunnel.start()
        try:
            assert tunnel.connected and tunnel.docker_host == f"unix://{runtime_dir}/docker.sock"
            assert (runtime_dir / "docker.sock").stat().st_mode & 0o077 == 0
            for _ in range(10):
                listed = await docker_via(tunnel, "images", "--format", "{{.Repository}}")
                assert listed.returncode == 0, listed.stderr
                assert STANDIN_IMAGE.split(":")[0] in listed.stdout.split()
            assert remote.accepted_connections() - before == 1
            assert tunnel.connections == 1
        finally:
            await tunnel.stop()
        assert not (runtime_dir / "docker.sock").exists()
        assert not (runtime_dir / "ssh.ctl").exists()

    run(scenario())


@pytest.mark.docker
def test_published_ports_are_forwarded_and_cancelled(remote: RemoteHost, runtime_dir: Path) -> None:
    """A port published over there answers on 127.0.0.1 here only while it is forwarded."""
    port = free_port()
    name = f"fwd-{port}"
    started = remote.dockerd.docker(
        *("run", "-d", "--name", name, "--network", NETWORK, "-p", f"127.0.0.1:{port}:8080"),
        *("-e", "STANDIN_ROLE=postgres", STANDIN_IMAGE),
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}/healthz"

    async def scenario() -> None:
        tunnel = tunnel_to(remote, runtime_dir)
        await tunnel.start()
        try:
            await until(
                lambda: asyncio.to_thread(lambda: remote.netns.http_get(url) == "ok"),
                30,
                "the container answering on the remote machine",
            )
            assert await asyncio.to_thread(http_get, url) is None, "reachable without a forward"
            assert await tunnel.set_forwards({port: "postgres"}) == []
            assert tunnel.forwarded == {port}
            assert await asyncio.to_thread(http_get, url) == "ok"
            assert await tunnel.set_forwards({}) == []
            assert tunnel.forwarded == set()
            assert await asyncio.to_thread(http_get, url) is None, "forward not cancelled"
        finally:
            await tunnel.stop()

    try:
        run(scenario())
    finally:
        remote.dockerd.docker("rm", "-f", name)


@pytest.mark.docker
def test_a_local_port_in_use_is_an_error_naming_the_service(
    remote: RemoteHost, runtime_dir: Path
) -> None:
    """A port taken here is reported with the service's name, the others forward, and it is
    forwarded once it is free (a host platform a switch stops frees its port)."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    other = free_port()

    async def scenario() -> list[str]:
        tunnel = tunnel_to(remote, runtime_dir)
        await tunnel.start()
        try:
            problems = await tunnel.set_forwards({taken: "postgres", other: "redpanda"})
            assert tunnel.forwarded == {other}
            assert list(tunnel.problems) == [taken]
            squatter.close()

            async def both() -> bool:
                return tunnel.forwarded == {taken, other}

            await until(both, 10, "the freed port forwarded")
            assert tunnel.problems == {}
            return problems
        finally:
            await tunnel.stop()

    try:
        problems = run(scenario())
    finally:
        squatter.close()
    assert len(problems) == 1
    assert "service postgres" in problems[0] and f"port {taken}" in problems[0]
    assert "already in use" in problems[0]


@pytest.mark.docker
def test_a_killed_ssh_is_reported_and_reconnected_with_its_forwards(
    remote: RemoteHost, runtime_dir: Path
) -> None:
    """Killing the ssh process: lost with a reason, reconnected, forwards back, docker works."""
    port = free_port()
    name = f"kill-{port}"
    started = remote.dockerd.docker(
        *("run", "-d", "--name", name, "--network", NETWORK, "-p", f"127.0.0.1:{port}:8080"),
        *("-e", "STANDIN_ROLE=redpanda", STANDIN_IMAGE),
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}/healthz"

    async def scenario() -> None:
        reports = Reports()
        tunnel = tunnel_to(remote, runtime_dir, reports)
        await tunnel.start()
        try:
            assert await tunnel.set_forwards({port: "redpanda"}) == []
            await until(
                lambda: asyncio.to_thread(lambda: http_get(url) == "ok"), 30, "forwarded port"
            )
            assert tunnel._proc is not None
            os.kill(tunnel._proc.pid, signal.SIGKILL)
            await reports.wait_for("lost", 10)
            assert not tunnel.connected
            assert "exited with -9" in reports.seen[0], reports.seen
            await reports.wait_for("back", BACK_DEADLINE)
            assert reports.seen[1:] == ["back"]
            assert tunnel.connected and tunnel.connections == 2
            assert tunnel.forwarded == {port}
            assert await asyncio.to_thread(http_get, url) == "ok"
            info = await docker_via(tunnel, "ps", "--format", "{{.Names}}")
            assert name in info.stdout.split(), info.stderr
        finally:
            await tunnel.stop()

    try:
        run(scenario())
    finally:
        remote.dockerd.docker("rm", "-f", name)


@pytest.mark.docker
def test_refused_ssh_and_a_silent_engine_are_reported(
    remote: RemoteHost, runtime_dir: Path
) -> None:
    """Auth refused: ssh's own reason; connected but no engine there: says so; nothing left."""

    async def scenario() -> tuple[str, str]:
        refused = SshTunnel(
            engine.parse_ssh(remote.url),
            runtime_dir,
            ssh=[*remote.ssh_args(), "-o", "PubkeyAuthentication=no"],
            connect_timeout=15,
        )
        with pytest.raises(DockerUnavailable) as first:
            await refused.start()
        silent = SshTunnel(
            engine.parse_ssh(remote.url),
            runtime_dir,
            ssh=remote.ssh_args(),
            remote_socket="/run/no-engine-here.sock",
            connect_timeout=3,
        )
        with pytest.raises(DockerUnavailable) as second:
            await silent.start()
        assert not await engine_answers(runtime_dir / "docker.sock")
        return str(first.value), str(second.value)

    refused, silent = run(scenario())
    assert "Permission denied" in refused and "exited with 255" in refused
    assert "no Docker engine answers at /run/no-engine-here.sock" in silent


@pytest.mark.docker
def test_an_engine_not_there_at_start_is_retried_until_it_answers(
    remote: RemoteHost, runtime_dir: Path
) -> None:
    """start(retry=True) does not raise: lost at once, back once the engine's socket appears."""
    late = remote.root / "late.sock"  # the stand-in shares this filesystem

    async def scenario() -> Reports:
        reports = Reports()
        tunnel = SshTunnel(
            engine.parse_ssh(remote.url),
            runtime_dir,
            on_lost=reports.lost,
            on_back=reports.back,
            ssh=remote.ssh_args(),
            remote_socket=str(late),
            connect_timeout=2,
        )
        await tunnel.start(retry=True)
        try:
            assert not tunnel.connected and reports.seen[0].startswith("lost: ")
            late.symlink_to(remote.dockerd.socket)
            await reports.wait_for("back", BACK_DEADLINE)
            assert tunnel.connected and tunnel.error is None
            assert await engine_answers(runtime_dir / "docker.sock")
        finally:
            await tunnel.stop()
            late.unlink(missing_ok=True)
        return reports

    reports = run(scenario())
    assert "no Docker engine answers" in reports.seen[0]
    assert reports.seen[-1] == "back"


@pytest.mark.docker
def test_the_connection_points_docker_at_the_tunnel_and_prepares_the_stack(
    remote: RemoteHost, runtime_dir: Path, tmp_path: Path
) -> None:
    """DOCKER_HOST is the tunnel's socket; before up, published ports forward, bind mounts show."""
    override = tmp_path / "bind.yaml"
    override.write_text(f"services:\n  postgres:\n    volumes:\n      - {tmp_path}:/seed:ro\n")
    ports = {"DEMO_POSTGRES_PORT": free_port(), "DEMO_REDPANDA_PORT": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
        "DOCKER_CONTEXT": "leftover",
        **{k: str(v) for k, v in ports.items()},
    }
    files = ComposeFiles("devsup-remote-prepare", (DEMO_STACK / "docker-compose.yaml", override))

    async def scenario() -> EngineStatus:
        connection = EngineConnection(
            EngineConfig(host=remote.url), runtime_dir, env=env, ssh=remote.ssh_args()
        )
        await connection.start()
        try:
            assert env["DOCKER_HOST"] == f"unix://{runtime_dir}/docker.sock"
            assert "DOCKER_CONTEXT" not in env
            await connection.prepare(
                Compose(files, on_line=lambda line: None), ["postgres", "redpanda"]
            )
            assert connection.tunnel is not None
            assert connection.tunnel.forwarded == set(ports.values())
            return connection.status(docker_available=True)
        finally:
            await connection.stop()

    status = run(scenario())
    assert status["host"] == remote.url and status["connected"] is True
    assert len(status["warnings"]) == 1
    assert f"service postgres bind-mounts {tmp_path}" in status["warnings"][0]
