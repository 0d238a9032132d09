"""A network namespace of a test's own: processes in it cannot touch the host's interfaces.

A private `dockerd` started in the host's namespace deletes the system engine's `docker0`
(`--bridge=none` removes the default bridge interface). In a namespace of its own it sees only
its own loopback (and whatever veth end is moved in), and the networks it creates vanish with the
namespace. Unix sockets live on the filesystem, so the test reaches an engine in here through its
socket path as usual; TCP ports bound in here are reachable only from inside (`run`, `http_get`)
or over a veth pair (`add_veth`).

Processes are started like `ip netns exec` starts them: with a mount namespace of their own (a
slave of the host's) and a sysfs of the namespace on /sys, so mounts made in there (overlay
layers, bind mounts) never show up on the host and disappear with the last process. Unlike
`ip netns exec`, the host's cgroup mounts under /sys/fs/cgroup are kept (dockerd refuses to start
without them: "Devices cgroup isn't mounted").
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "devsup-test-"
# Host-side addresses of veth pairs: a /30 per pair out of a block no engine pool uses here.
VETH_BLOCK = ipaddress.IPv4Network("10.214.0.0/16")
# Processes left in a namespace get SIGTERM, then SIGKILL after this long.
KILL_GRACE = 5.0
# Run inside the new mount namespace before the command: the cgroup tree is parked, /sys
# re-mounted for this network namespace, the cgroup tree put back; then the command is exec'd
# (so its pid is the one Popen returns).
ENTER_SCRIPT = (
    'park=$(mktemp -d) && mount --rbind /sys/fs/cgroup "$park" && mount -t sysfs sysfs /sys'
    ' && mount --rbind "$park" /sys/fs/cgroup && umount -l "$park" && rmdir "$park"'
    ' && exec "$@"'
)


def ip(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; on failure raise with ip's own message (check=True)."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Veth:
    """A veth pair: `host_if` at `host_addr` here, `ns_if` at `ns_addr` in the namespace."""

    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str


class NetNamespace:
    """One named network namespace (`ip netns add`), loopback up; `remove()` ends all in it."""

    def __init__(self, name: str | None = None) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.name = name or f"{NAME_PREFIX}{self.tag}"
        self.veths: list[Veth] = []
        self.created = False

    def __enter__(self) -> NetNamespace:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def create(self) -> None:
        ip("netns", "add", self.name)
        self.created = True
        ip("-n", self.name, "link", "set", "lo", "up")

    def exec_args(self, args: Sequence[str | os.PathLike[str]]) -> list[str]:
        """The command line that runs `args` inside the namespace (exec'd: same pid)."""
        return [
            *("nsenter", f"--net={NETNS_DIR / self.name}", "--"),
            *("unshare", "--mount", "--propagation", "slave", "--"),
            *("sh", "-c", ENTER_SCRIPT, "sh"),
            *(os.fspath(a) for a in args),
        ]

    def run(
        self, args: Sequence[str | os.PathLike[str]], *, timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace to completion, capturing text output; never raises."""
        return subprocess.run(
            self.exec_args(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def popen(
        self, args: Sequence[str | os.PathLike[str]], **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in the namespace (its own session: no terminal signals)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.exec_args(args), start_new_session=True, **kwargs)

    def http_get(self, url: str, timeout: float = 2.0) -> str | None:
        """GET `url` from inside the namespace: the body, stripped, or None when unreachable."""
        probe = (
            "import sys, urllib.request\n"
            "try:\n"
            f"    r = urllib.request.urlopen(sys.argv[1], timeout={timeout})\n"
            "    sys.stdout.write(r.read().decode())\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        result = self.run([sys.executable, "-c", probe, url], timeout=timeout + 10)
        return result.stdout.strip() if result.returncode == 0 else None

    def add_veth(self) -> Veth:
        """A veth pair between the host and the namespace, on a /30 no interface here uses."""
        host_if, ns_if = f"dvh{self.tag}", f"dvn{self.tag}"  # 11 chars; the limit is 15
        subnet = _free_subnet()
        host_addr, ns_addr = (str(a) for a in list(subnet.hosts())[:2])
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        veth = Veth(host_if, ns_if, host_addr, ns_addr)
        self.veths.append(veth)  # recorded before anything else can fail: remove() deletes it
        ip("link", "set", ns_if, "netns", self.name)
        ip("addr", "add", f"{host_addr}/{subnet.prefixlen}", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", self.name, "addr", "add", f"{ns_addr}/{subnet.prefixlen}", "dev", ns_if)
        ip("-n", self.name, "link", "set", ns_if, "up")
        return veth

    def pids(self) -> list[int]:
        """Processes whose network namespace is this one."""
        if not self.created:
            return []
        listed = ip("netns", "pids", self.name, check=False)
        return [int(p) for p in listed.stdout.split() if p.isdigit()]

    def remove(self) -> None:
        """End every process still in the namespace, delete the veth pairs and the namespace."""
        if not self.created:
            return
        _end(self.pids())
        for veth in self.veths:
            # Deleting one end deletes the pair; the host end may be gone with the namespace.
            if Path("/sys/class/net", veth.host_if).exists():
                ip("link", "delete", veth.host_if, check=False)
        self.veths.clear()
        ip("netns", "delete", self.name, check=False)
        self.created = False


def _end(pids: list[int]) -> None:
    """SIGTERM the processes, SIGKILL whatever is still there after KILL_GRACE."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        alive = [p for p in pids if _signal(p, sig)]
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _exists(p)]
            if alive:
                time.sleep(0.05)
        pids = alive
        if not pids:
            return


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _exists(pid: int) -> bool:
    """True while the process exists and is not a zombie of ours (reaped here when it is)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /30 of VETH_BLOCK that overlaps no address configured on the host."""
    used = ip("-4", "-o", "addr", "show").stdout.split()
    taken = [
        ipaddress.ip_interface(word).network for word in used if "/" in word and word[0].isdigit()
    ]
    subnets: list[ipaddress.IPv4Network] = list(VETH_BLOCK.subnets(new_prefix=30))
    for _ in range(100):
        candidate = random.choice(subnets)
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError(f"no free /30 in {VETH_BLOCK} for a veth pair")


def leftover_namespaces() -> list[str]:
    """Namespaces named like the tests' that exist now (a guard reports them)."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(NAME_PREFIX))
    return []


@contextlib.contextmanager
def namespace() -> Iterator[NetNamespace]:
    """A fresh namespace for the `with` block, removed (with all its processes) after."""
    ns = NetNamespace()
    try:
        ns.create()
        yield ns
    finally:
        ns.remove()
