"""One OpenSSH connection to a remote engine, carrying everything devsup sends it.

The system's `ssh` client (so the user's ssh config, keys and agent apply) runs as a control
master and forwards the remote engine's socket to `docker.sock` in devsup's runtime directory;
compose and the docker SDK use that local socket (`docker_host`), so ten commands cost no new
connection (docker's own ssh helper opens one per call: docker/cli#2584). Published ports are
added to and removed from the same connection with `ssh -O forward|cancel`.

Lifecycle owner: `_supervise`, one task on the daemon's loop, waits on the ssh process; when it
exits the tunnel reports lost (`on_lost`), reconnects with backoff, restores the forwards and
reports back (`on_back`). `start()` and `stop()` are the only ways in; port changes are
serialised with connects by one lock, so a forward never goes to a master being replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from devsupervisor.backoff import BackoffPolicy, RestartBudget
from devsupervisor.errors import DockerUnavailable
from devsupervisor.logs.pipeline import get_logger
from devsupervisor.stack.engine import SshDestination
from devsupervisor.stack.local_checks import engine_answers, forward_spec, port_is_free

log = get_logger()

# Where a Linux Docker engine listens; the forward targets it on the remote machine.
REMOTE_SOCKET = "/var/run/docker.sock"
# Keepalives every 5 s, three unanswered: a dead link is noticed within ~15 s, not at TCP's
# two-hour default.
SERVER_ALIVE_INTERVAL = 5
SERVER_ALIVE_COUNT = 3
# ssh's connect plus auth plus the first engine ping; a slow link or a cold engine takes seconds.
CONNECT_TIMEOUT = 30.0
# How long the daemon's start waits for the first connect before going on without the engine.
FIRST_ATTEMPT_WAIT = 10.0
# How often the connect waits re-check the local socket while ssh is authenticating.
CONNECT_POLL = 0.05
# A `ssh -O` request to the running master answers in milliseconds.
MUX_TIMEOUT = 15.0
# SIGTERM, then SIGKILL after this long.
STOP_GRACE = 5.0
# A port that could not be forwarded (taken here, often by the host-binary platform a switch is
# about to stop) is tried again this often until it works or is no longer wanted.
FORWARD_RETRY = 1.0
# A few of ssh's last stderr lines explain why it exited.
STDERR_LINES = 20
# Reconnecting: quick first retry, then doubling to a 10 s cap, forever (a laptop off the VPN for
# an hour comes back without a restart).
RECONNECT_POLICY = BackoffPolicy(initial=0.5, max=10.0, restarts=None, within=300.0)


class SshTunnel:
    """The ssh control master to `destination`, forwarding the remote engine's socket here."""

    def __init__(
        self,
        destination: SshDestination,
        runtime_dir: Path,
        *,
        on_lost: Callable[[str], None] = lambda reason: None,
        on_back: Callable[[], None] = lambda: None,
        ssh: Sequence[str] = ("ssh",),
        remote_socket: str = REMOTE_SOCKET,
        policy: BackoffPolicy = RECONNECT_POLICY,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.destination = destination
        self.runtime_dir = runtime_dir
        self.local_socket = runtime_dir / "docker.sock"
        self.control_path = runtime_dir / "ssh.ctl"
        self._on_lost = on_lost
        self._on_back = on_back
        self._ssh = list(ssh)
        self._remote_socket = remote_socket
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._stderr_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self.connected = False
        self.connections = 0  # ssh processes that got through (status, tests, the closing note)
        self.error: str | None = None  # why the tunnel is down, None while connected
        self._wanted: dict[int, str] = {}  # port -> service, as last asked for
        self._forwarded: set[int] = set()  # ports the current master forwards
        self.problems: dict[int, str] = {}  # wanted ports not forwarded: why, in a sentence
        self._retrier: asyncio.Task[None] | None = None

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST (and the SDK's base_url) that reaches the remote engine."""
        return f"unix://{self.local_socket}"

    @property
    def forwarded(self) -> frozenset[int]:
        return frozenset(self._forwarded)

    def _start_retrier(self) -> None:
        self._retrier = asyncio.create_task(self._retry_forwards(), name="ssh-forwards")

    async def start(self, *, retry: bool = False) -> None:
        """Connect; return once the remote engine answers through the tunnel.

        Args:
            retry: the daemon's way. The first attempt runs in the background: a failure is
                reported lost and retried with backoff (a daemon starts without its engine, as
                with a local one), and this returns once that attempt has ended, or after
                FIRST_ATTEMPT_WAIT at most (a host that drops packets takes the whole connect
                timeout), so the platform is not held up by an unreachable machine.

        Raises:
            DockerUnavailable: (retry=False) ssh failed (the reason is its last line) or the
                engine is silent.
        """
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self._end_stale_master()
        if retry:
            first = asyncio.Event()
            self._supervisor = asyncio.create_task(self._supervise(first_attempt=first))
            self._start_retrier()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first.wait(), FIRST_ATTEMPT_WAIT)
            return
        async with self._lock:
            await self._connect()
        self._supervisor = asyncio.create_task(self._supervise())
        self._start_retrier()

    async def stop(self) -> None:
        """Close the connection (every forward with it) and remove the local sockets."""
        self._stopping = True
        for task in (self._supervisor, self._retrier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._end_process()
        for path in (self.local_socket, self.control_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.connected = False
        log.info("docker.ssh_closed", destination=str(self.destination))

    async def set_forwards(self, wanted: Mapping[int, str]) -> list[str]:
        """Forward exactly these local ports (port -> service) to the same ports over there.

        Returns:
            One sentence per port that could not be forwarded (taken here, refused by ssh);
            those are tried again every FORWARD_RETRY seconds (`problems` says which remain).
        """
        async with self._lock:
            self._wanted = dict(wanted)
            if not self.connected:
                return []  # applied on reconnect
            return await self._apply_forwards()

    # -- the connection ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Start the master and wait for the engine to answer through it. Holds `_lock`."""
        self._forwarded.clear()
        self._stderr.clear()
        # Left by our previous master when it was killed: ssh would not multiplex over it.
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        argv = [
            *self._ssh,
            *("-N", "-M", "-S", str(self.control_path)),
            *("-o", "ControlPersist=no"),
            *("-o", "ExitOnForwardFailure=yes"),
            *("-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}"),
            *("-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT}"),
            *("-o", "StreamLocalBindUnlink=yes"),
            *("-o", "StreamLocalBindMask=0177"),  # the local socket is the user's alone
            *("-o", "BatchMode=yes"),  # a daemon has no terminal to ask a password on
            *("-L", f"{self.local_socket}:{self._remote_socket}"),
            *self.destination.args(),
        ]
        log.debug("docker.ssh_connecting", argv=argv)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # terminal signals meant for devsup never reach it
        )
        self._proc = proc
        self._stderr_task = asyncio.create_task(self._read_stderr(proc))
        deadline = asyncio.get_running_loop().time() + self._connect_timeout
        while not await engine_answers(self.local_socket):
            if proc.returncode is not None or asyncio.get_running_loop().time() >= deadline:
                reason = await self._failure_reason(proc)
                await self._end_process()
                raise DockerUnavailable(reason)
            # Either ssh exits or the socket answers; neither announces itself, so look again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), CONNECT_POLL)
        self.connected = True
        self.error = None
        self.connections += 1
        log.info(
            "docker.ssh_connected",
            destination=str(self.destination),
            socket=str(self.local_socket),
            pid=proc.pid,
        )
        await self._apply_forwards()

    async def _supervise(self, first_attempt: asyncio.Event | None = None) -> None:
        """Own the connection: make the first attempt when asked to (`first_attempt` is set once
        it has ended), then wait on the master; when it exits, report lost, reconnect with
        backoff, report back."""
        if first_attempt is not None:
            try:
                async with self._lock:
                    await self._connect()
            except DockerUnavailable as exc:
                self._lost(str(exc))
                first_attempt.set()
                await self._reconnect()
                self._on_back()
            first_attempt.set()
        while not self._stopping:
            assert self._proc is not None
            await self._proc.wait()
            if self._stopping:
                return
            self._lost(await self._failure_reason(self._proc))
            await self._reconnect()
            self._on_back()

    def _lost(self, reason: str) -> None:
        self.connected = False
        self.error = reason
        self._forwarded.clear()
        self.problems.clear()
        log.warning("docker.ssh_lost", destination=str(self.destination), reason=reason)
        self._on_lost(reason)

    async def _reconnect(self) -> None:
        """Try again after each backoff delay until a connect succeeds (or we are cancelled)."""
        budget = RestartBudget(self._policy)
        while True:
            await asyncio.sleep(budget.record_failure() or self._policy.max)
            try:
                async with self._lock:
                    await self._connect()
            except DockerUnavailable as exc:
                self.error = str(exc)
                log.info("docker.ssh_retry_failed", reason=str(exc), attempt=budget.count)
                continue
            return

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("engine.ssh_output", line=line)

    async def _failure_reason(self, proc: asyncio.subprocess.Process) -> str:
        """A sentence: ssh's exit and its last words, or a silent engine."""
        if proc.returncode is None:
            return (
                f"ssh {self.destination}: connected, but no Docker engine answers at "
                f"{self._remote_socket} on that machine"
            )
        if self._stderr_task is not None:  # its last lines arrive with EOF
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        last = self._stderr[-1] if self._stderr else "no output"
        return f"ssh {self.destination} exited with {proc.returncode}: {last}"

    async def _end_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None

    async def _end_stale_master(self) -> None:
        """A master left by a devsup that was killed holds the control path: ask it to exit."""
        if self.control_path.exists():
            code, _ = await self._mux("exit")
            log.info("docker.ssh_stale_master", ended=code == 0)
            with contextlib.suppress(FileNotFoundError):
                self.control_path.unlink()

    # -- port forwards ----------------------------------------------------------------------------

    async def _apply_forwards(self) -> list[str]:
        """Cancel forwards no longer wanted, add the missing ones. Holds `_lock`.

        Logs only changes: the forwarded set when it moved, a problem the first time it is seen.
        """
        before, known = set(self._forwarded), dict(self.problems)
        problems: dict[int, str] = {}
        for port in sorted(self._forwarded - set(self._wanted)):
            code, out = await self._mux("cancel", "-L", forward_spec(port))
            if code != 0:
                log.warning("stack.forward_cancel_failed", port=port, output=out)
            self._forwarded.discard(port)
        for port, service in sorted(self._wanted.items()):
            if port in self._forwarded:
                continue
            if not port_is_free(port):
                problems[port] = (
                    f"service {service}: port {port} on 127.0.0.1 is already in use on this "
                    f"machine, so it cannot be forwarded to the remote engine"
                )
                continue
            code, out = await self._mux("forward", "-L", forward_spec(port))
            if code != 0:
                problems[port] = f"service {service}: ssh could not forward port {port}: {out}"
                continue
            self._forwarded.add(port)
        self.problems = problems
        for port, problem in problems.items():
            if known.get(port) != problem:
                log.error("stack.forward_failed", port=port, problem=problem)
        if self._forwarded != before:
            log.info("stack.forwards", ports=sorted(self._forwarded), problems=len(problems))
        return list(problems.values())

    async def _retry_forwards(self) -> None:
        """Try the ports that could not be forwarded again, until they are or are not wanted."""
        while True:
            await asyncio.sleep(FORWARD_RETRY)
            if self.connected and self.problems:
                async with self._lock:
                    if self.connected:
                        await self._apply_forwards()

    async def _mux(self, command: str, *args: str) -> tuple[int, str]:
        """`ssh -S CONTROL -O COMMAND ...` to the master: exit code and output."""
        proc = await asyncio.create_subprocess_exec(
            *self._ssh,
            *("-S", str(self.control_path), "-O", command, *args),
            *self.destination.args(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), MUX_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, f"ssh -O {command} timed out after {MUX_TIMEOUT}s"
        code = proc.returncode if proc.returncode is not None else -1
        return code, out.decode(errors="replace").strip()
