"""A second machine stand-in: a network namespace holding its own dockerd and sshd.

From the host it is reachable only over SSH: a veth pair gives it an address, a firewall inside
lets nothing but the sshd port in through that pair, and ports its engine publishes (on its own
127.0.0.1) are therefore out of the host's reach except through an ssh forward. As on a real
machine, the engine's API socket is at /var/run/docker.sock for the sshd (a bind mount in sshd's
own mount namespace; the host's /var/run/docker.sock is untouched).

The ssh side is throw-away: a fresh client key pair, host key, `authorized_keys`, and an ssh
config file (`ssh -F`) with its own known-hosts file, so nothing in ~/.ssh is read or written.
`wrapper_dir()` holds an `ssh` that adds `-F` and records each invocation: put it first on a
daemon's PATH to make the system's OpenSSH use this config.

The test's own assertions may look at the engine directly (`dockerd.docker(...)`, through the
socket file); the code under test goes through SSH.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.netns import NetNamespace, Veth
from tests.private_dockerd import PrivateDockerd

SSHD = Path("/usr/sbin/sshd")
SSH_PORT = 22
USER = "root"
# sshd answers in well under a second; generous for a loaded 2-core box.
SSHD_START_TIMEOUT = 20.0
# sshd logs this line once per authenticated connection.
ACCEPTED = "Accepted publickey for"
# Mounted over /run in sshd's mount namespace: its privilege separation dir and the engine's
# socket at the standard path, then sshd itself (exec'd: same pid).
SSHD_SCRIPT = (
    "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/sshd && touch /run/docker.sock"
    ' && mount --bind "$1" /run/docker.sock && shift && exec "$@"'
)


def missing_tools() -> str | None:
    """Why this machine cannot host the stand-in, or None."""
    import os

    if os.geteuid() != 0:
        return "the remote-machine stand-in needs root (network namespace, dockerd, sshd)"
    for tool in ("dockerd", "docker", "ip", "nsenter", "unshare", "iptables", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH (run scripts/prereqs)"
    if not SSHD.exists():
        return f"{SSHD} not found (run scripts/prereqs: it installs openssh-server)"
    return None


class RemoteHost:
    """The stand-in machine under `root` (short: unix socket paths). `start()`, then `remove()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.netns = NetNamespace()
        self.dockerd = PrivateDockerd(root / "d", netns=self.netns)
        self.ssh_dir = root / "ssh"
        self.key = self.ssh_dir / "id"
        self.host_key = self.ssh_dir / "host_key"
        self.authorized_keys = self.ssh_dir / "authorized_keys"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.ssh_config = self.ssh_dir / "config"
        self.sshd_config = self.ssh_dir / "sshd_config"
        self.sshd_log = self.ssh_dir / "sshd.log"
        self.invocations = self.ssh_dir / "invocations"
        self.sshd: subprocess.Popen[bytes] | None = None
        self.veth: Veth | None = None

    @property
    def address(self) -> str:
        assert self.veth is not None, "not started"
        return self.veth.ns_addr

    @property
    def url(self) -> str:
        """The engine address for devsup: `ssh://root@ADDRESS:22`."""
        return f"ssh://{USER}@{self.address}:{SSH_PORT}"

    def ssh_args(self) -> list[str]:
        """The ssh command (before destination and options) that uses the throw-away config."""
        return ["ssh", "-F", str(self.ssh_config)]

    def start(self) -> None:
        self.ssh_dir.mkdir(parents=True)
        self.netns.create()
        self.veth = self.netns.add_veth()
        self._firewall()
        self.dockerd.start()
        self._keys()
        self._start_sshd()

    def remove(self) -> None:
        """Stop sshd and the engine, delete the namespace (and veth) and the root directory."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        self.dockerd.remove()
        self.netns.remove()  # ends whatever is left in it (sshd session children)
        shutil.rmtree(self.root, ignore_errors=True)

    def _firewall(self) -> None:
        """Only the sshd port is open to the host through the veth pair."""
        assert self.veth is not None
        rules = [
            ["-A", "INPUT", "-i", self.veth.ns_if, "-p", "tcp", "--dport", str(SSH_PORT)],
            ["-A", "INPUT", "-i", self.veth.ns_if],
        ]
        for rule, target in zip(rules, ("ACCEPT", "DROP"), strict=True):
            done = self.netns.run(["iptables", *rule, "-j", target], timeout=30)
            if done.returncode != 0:
                raise RuntimeError(f"iptables {' '.join(rule)} failed: {done.stderr.strip()}")

    def _keys(self) -> None:
        for path in (self.key, self.host_key):
            _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "devsup-test", "-f", path])
        self.authorized_keys.write_text(self.key.with_suffix(".pub").read_text())
        self.ssh_config.write_text(
            "Host *\n"
            f"  User {USER}\n"
            f"  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n"
            "  IdentityAgent none\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking accept-new\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
        )
        self.sshd_config.write_text(
            f"ListenAddress {self.address}:{SSH_PORT}\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            # The temp dir is root's 0700 mkdtemp; StrictModes would also check /tmp itself.
            "StrictModes no\n"
            "AllowTcpForwarding yes\n"
            "AllowStreamLocalForwarding yes\n"
            "PidFile none\n"
            "LogLevel VERBOSE\n"
        )

    def _start_sshd(self) -> None:
        with self.sshd_log.open("ab") as out:
            self.sshd = self.netns.popen(
                [
                    *("sh", "-c", SSHD_SCRIPT, "sh", self.dockerd.socket),
                    *(SSHD, "-D", "-e", "-f", self.sshd_config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SSHD_START_TIMEOUT
        while not self._sshd_answers():
            if self.sshd.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"sshd did not start:\n{self.sshd_log.read_text()[-3000:]}")
            time.sleep(0.05)

    def _sshd_answers(self) -> bool:
        """True once sshd's banner arrives over the veth pair."""
        try:
            with socket.create_connection((self.address, SSH_PORT), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    # -- for tests ------------------------------------------------------------------------------

    def ssh(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command on the stand-in over SSH (a connection of its own)."""
        return subprocess.run(
            [*self.ssh_args(), self.address, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def accepted_connections(self) -> int:
        """SSH connections sshd has authenticated so far."""
        if not self.sshd_log.exists():
            return 0
        return self.sshd_log.read_text(errors="replace").count(ACCEPTED)

    def wrapper_dir(self) -> Path:
        """A directory with an `ssh` using this config; first on PATH, it stands in for ssh."""
        bin_dir = self.ssh_dir / "bin"
        if not bin_dir.exists():
            bin_dir.mkdir()
            real = shutil.which("ssh")
            assert real is not None
            script = bin_dir / "ssh"
            script.write_text(
                "#!/bin/sh\n"
                f'printf "%s\\n" "$*" >> {shlex.quote(str(self.invocations))}\n'
                f'exec {shlex.quote(real)} -F {shlex.quote(str(self.ssh_config))} "$@"\n'
            )
            script.chmod(0o755)
        return bin_dir

    def load_images(self, images: Sequence[str]) -> None:
        """Copy images from the host engine (`docker save | docker load`): no registry."""
        archive = self.root / "images.tar"
        _check(["docker", "save", "-o", archive, *images], timeout=180)
        loaded = self.dockerd.docker("load", "-i", str(archive), timeout=180)
        archive.unlink()
        if loaded.returncode != 0:
            raise RuntimeError(f"docker load on the stand-in failed: {loaded.stderr}")

    def leftovers(self) -> list[str]:
        """Containers, volumes and networks (beyond the defaults) on the stand-in's engine."""
        found: list[str] = []
        for kind, args in (
            ("container", ["ps", "-a", "--format", "{{.Names}}"]),
            ("volume", ["volume", "ls", "--format", "{{.Name}}"]),
            ("network", ["network", "ls", "--format", "{{.Name}}"]),
        ):
            names = self.dockerd.docker(*args).stdout.split()
            found += [f"{kind}:{n}" for n in names if n not in ("bridge", "host", "none")]
        return found


def _check(args: Sequence[str | Path], timeout: float = 60) -> None:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, args))}` failed: {done.stderr.strip()}")


@contextlib.contextmanager
def remote_host(images: Sequence[str] = ()) -> Iterator[RemoteHost]:
    """A started stand-in holding `images`; removed after the block, also on failure."""
    problem = missing_tools()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    host = RemoteHost(Path(tempfile.mkdtemp(prefix="rh", dir="/tmp")))
    try:
        try:
            host.start()
            if images:
                host.load_images(images)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield host
    finally:
        host.remove()
