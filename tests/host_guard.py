"""The host as the suite found it: a snapshot before the run, compared with one after.

A developer runs the suite on their own machine, next to their own Docker engine; the suite must
leave both as it found them. `conftest.py` takes a `Snapshot` at session start and fails the
session when the one at the end differs: something that was there is missing (the system
engine's `docker0`, a network, a container), or something the tests made is left over. What a
test created and removed again appears in neither snapshot, so it is not reported.

Cheap by design: interfaces and namespaces are directory listings; the engine is asked only when
it is there to ask (three `docker ... ls` calls), so the fast tier needs no Docker at all.
Container veths (`veth*`) come and go with containers, which are compared themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NET_DIR = Path("/sys/class/net")
NETNS_DIR = Path("/run/netns")
DEFAULT_SOCKET = Path("/var/run/docker.sock")
# One listing takes ~50 ms; an engine slower than this is treated as not answering.
DOCKER_TIMEOUT = 15.0
LISTINGS = {
    "container": ["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
    "network": ["network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"],
    "volume": ["volume", "ls", "--format", "{{.Name}}"],
}
# Set to 0 to switch the guard off (e.g. while another suite runs on the same engine).
ENV_SWITCH = "DEVSUP_HOST_GUARD"


@dataclass
class Snapshot:
    """What of the host the suite must not change, as 'kind: name' strings."""

    items: set[str] = field(default_factory=set)
    engine: bool = False  # whether the engine answered (its listings are in `items` then)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def take() -> Snapshot:
    """The host's interfaces, network namespaces and, when an engine answers, its objects."""
    items = {f"interface: {n}" for n in _listdir(NET_DIR) if not n.startswith("veth")}
    items |= {f"netns: {n}" for n in _listdir(NETNS_DIR)}
    engine = _engine_expected()
    if engine:
        for kind, args in LISTINGS.items():
            listed = _docker(args)
            if listed is None:
                engine = False
                items = {i for i in items if not i.startswith(tuple(LISTINGS))}
                break
            items |= {f"{kind}: {line}" for line in listed}
    return Snapshot(items, engine)


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """One line per change, empty when the host is as it was."""
    lines: list[str] = []
    if before.engine and not after.engine:
        lines.append("the Docker engine answered before the run and no longer does")
    compared = after.items
    if not before.engine or not after.engine:  # no engine listings on one side: compare the rest
        compared = {i for i in after.items if not i.startswith(tuple(LISTINGS))}
        before = Snapshot({i for i in before.items if not i.startswith(tuple(LISTINGS))})
    lines += [f"missing after the run: {item}" for item in sorted(before.items - compared)]
    lines += [f"left over by the run: {item}" for item in sorted(compared - before.items)]
    return lines


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _engine_expected() -> bool:
    """True when a docker CLI exists and an engine could be configured (no probe yet)."""
    if shutil.which("docker") is None:
        return False
    return bool(os.environ.get("DOCKER_HOST") or os.environ.get("DOCKER_CONTEXT")) or (
        DEFAULT_SOCKET.exists()
    )


def _docker(args: list[str]) -> list[str] | None:
    """The lines a docker listing prints, or None when the engine does not answer."""
    try:
        result = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [line for line in result.stdout.splitlines() if line.strip()]
