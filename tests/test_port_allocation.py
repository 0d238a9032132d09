"""Port allocation for instances: defaults, the next free port, kept ports, the registry of other
instances, the user-wide lock (also across real processes), export and substitution."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devsupervisor.config import parse_config
from devsupervisor.instances.allocation import LOCK_NAME, PortRegistry, PortsExhausted, is_free
from devsupervisor.instances.daemon_ports import InstancePorts
from devsupervisor.statefile import SavedState, StateStore

REPO = Path(__file__).resolve().parents[1]


def registry(state_dir: Path, busy: set[int] | None = None) -> PortRegistry:
    """A registry whose idea of busy ports is `busy` (no real sockets involved)."""
    taken = busy or set()
    return PortRegistry(state_dir, is_free=lambda port: port not in taken)


def allocate(
    reg: PortRegistry, name: str, wanted: dict[str, int], kept: dict[str, int] | None = None
) -> dict[str, int]:
    """Allocate for instance `name` and save the result in its state file, as the daemon does."""
    store = StateStore(reg.state_dir / f"{name}.json")
    return reg.allocate(
        name, wanted, kept or {}, save=lambda ports: store.save(SavedState(ports=ports))
    )


def test_defaults_when_free(tmp_path: Path) -> None:
    """The first instance gets every default, and the state file holds them."""
    reg = registry(tmp_path)
    assert allocate(reg, "a", {"DB": 5432, "WEB": 8080}) == {"DB": 5432, "WEB": 8080}
    assert json.loads((tmp_path / "a.json").read_text())["ports"] == {"DB": 5432, "WEB": 8080}


def test_second_instance_gets_the_next_free_ports(tmp_path: Path) -> None:
    """Ports held by another instance's state file, and busy ports, are skipped."""
    reg = registry(tmp_path, busy={5434})
    allocate(reg, "a", {"DB": 5432, "WEB": 5433})
    assert allocate(reg, "b", {"DB": 5432, "WEB": 8080}) == {"DB": 5435, "WEB": 8080}


def test_ports_of_a_removed_checkout_are_free_again(tmp_path: Path) -> None:
    """An instance whose config file is gone (a deleted worktree) holds its ports no more; a
    stopped instance whose checkout exists still does."""
    checkout = tmp_path / "wt" / "devsup.yaml"
    checkout.parent.mkdir()
    checkout.write_text("project: demo\n")
    StateStore(tmp_path / "old.json").save(SavedState(ports={"DB": 5432}, checkout=str(checkout)))
    reg = registry(tmp_path)
    assert allocate(reg, "b", {"DB": 5432}) == {"DB": 5433}
    checkout.unlink()
    assert allocate(reg, "c", {"DB": 5432}) == {"DB": 5432}


def test_two_names_with_one_default_get_two_ports(tmp_path: Path) -> None:
    """One instance never gets the same port for two names."""
    assert allocate(registry(tmp_path), "a", {"X": 7000, "Y": 7000}) == {"X": 7000, "Y": 7001}


def test_kept_port_reused_while_free(tmp_path: Path) -> None:
    """A port given before wins over the default while it is free; once busy, the default."""
    reg = registry(tmp_path)
    assert allocate(reg, "a", {"DB": 5432}, kept={"DB": 6000}) == {"DB": 6000}
    busy = registry(tmp_path, busy={6000})
    assert allocate(busy, "a", {"DB": 5432}, kept={"DB": 6000}) == {"DB": 5432}


def test_own_busy_port_is_kept(tmp_path: Path) -> None:
    """A kept port busy with the instance's own containers (a restart with the stack up) stays."""
    reg = registry(tmp_path, busy={6000, 5432})
    store = StateStore(tmp_path / "a.json")
    got = reg.allocate(
        "a",
        {"DB": 5432},
        {"DB": 6000},
        save=lambda ports: store.save(SavedState(ports=ports)),
        own=lambda: {6000},
    )
    assert got == {"DB": 6000}


def test_exhausted(tmp_path: Path) -> None:
    """No free port from the default up to 65535 is an error naming the port."""
    reg = registry(tmp_path, busy={65534, 65535})
    with pytest.raises(PortsExhausted, match=r"ports\.DB"):
        allocate(reg, "a", {"DB": 65534})


def test_planted_lock_symlink_is_refused(tmp_path: Path) -> None:
    """The lock file is opened with O_NOFOLLOW: a symlink planted there is never followed."""
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / LOCK_NAME).symlink_to(target)
    with pytest.raises(PortsExhausted, match="ports lock"):
        allocate(registry(tmp_path), "a", {"DB": 5432})


def test_is_free_sees_a_listener() -> None:
    """A port somebody listens on is not free; once closed it is."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not is_free(port)
    assert is_free(port)


ALLOCATE_SCRIPT = """
import sys
from pathlib import Path
from devsupervisor.instances.allocation import PortRegistry
from devsupervisor.statefile import SavedState, StateStore
state_dir, name, default = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # all start together
store = StateStore(state_dir / f"{name}.json")
got = PortRegistry(state_dir).allocate(
    name, {"A": default, "B": default + 1}, {}, save=lambda p: store.save(SavedState(ports=p))
)
print(got["A"], got["B"])
"""


@pytest.fixture
def free_base() -> Iterator[int]:
    """A port with a dozen free ports above it (best effort: the ports are re-checked)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = int(probe.getsockname()[1])
    yield base if base < 60000 else 40000


def test_concurrent_processes_get_distinct_ports(tmp_path: Path, free_base: int) -> None:
    """Three processes allocating at the same moment get six distinct ports (the lock)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ALLOCATE_SCRIPT, str(tmp_path), f"i{n}", str(free_base)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for n in range(3)
    ]
    outs = [p.communicate("go\n", timeout=30)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ports = [int(port) for out in outs for port in out]
    assert len(set(ports)) == 6, ports


CONFIG = """
project: demo
ports: {WEB_PORT: 8080, DB_PORT: 5432}
compose: {directory: ".", files: []}
stacks: {s: {platform: binary}}
platform:
  watch: {paths: ["."]}
  binary:
    workdir: .
    build: "true"
    run: exec ./server --port ${WEB_PORT}
    env: {ADDR: "127.0.0.1:${WEB_PORT}", DB: "localhost:${DB_PORT}"}
    ready: {http: "http://127.0.0.1:${WEB_PORT}/healthz"}
"""


def test_instance_ports_substitute_export_and_extend(tmp_path: Path) -> None:
    """prepare() sets the instance, replaces ${NAME}, exports NAME=port; a reload that adds a
    name allocates only that one and keeps the others."""
    source = tmp_path / "devsup.yaml"
    config = parse_config(yaml.safe_load(CONFIG), source)
    state_dir = tmp_path / "state"
    reg = registry(state_dir, busy={8080})
    environ: dict[str, str] = {}
    store = StateStore(state_dir / "demo-x.json")
    ports = InstancePorts("demo-x", SavedState(), store, registry=reg, environ=environ)
    ready = ports.prepare(config)
    assert ready.instance == "demo-x"
    binary = ready.platform.binary
    assert binary is not None
    assert binary.run == "exec ./server --port 8081"
    assert binary.env == {"ADDR": "127.0.0.1:8081", "DB": "localhost:5432"}
    assert environ == {"WEB_PORT": "8081", "DB_PORT": "5432"}
    assert json.loads(store.path.read_text())["ports"] == {"WEB_PORT": 8081, "DB_PORT": 5432}

    extended = parse_config(
        yaml.safe_load(CONFIG.replace("DB_PORT: 5432}", "DB_PORT: 5432, MQ_PORT: 1883}")),
        source,
    )
    ports.prepare(extended)
    assert ports.current == {"WEB_PORT": 8081, "DB_PORT": 5432, "MQ_PORT": 1883}
    assert environ["MQ_PORT"] == "1883"
