"""A working session on a remote engine: how many SSH connections does devsup open?

Issue 14's closing figure: docker's own ssh helper opens a connection per call (docker/cli#2584);
devsup keeps one. On the remote-machine stand-in (tests/remote_host.py: a network namespace with
its own dockerd and sshd, reached over SSH only) a daemon runs the demo stack for `--minutes`
while a client plays a developer: `status` every 2 s, a platform edit every 30 s (host-binary
reload), a switch to fullstack and back every 3 minutes (container build and `up` on the remote
engine). At the end it prints the connections sshd authenticated, the commands sent, and the
median status latency.

Run: `python3 benchmarks/remote_session.py [--minutes N]` as root (namespaces, dockerd, sshd;
`scripts/prereqs` installs openssh-server). Everything is torn down at the end, also on failure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.docker_env import STANDIN_IMAGE, build_demo_images  # noqa: E402
from tests.harness import http_get, wait_until  # noqa: E402
from tests.remote_host import remote_host  # noqa: E402
from tests.test_remote_stack import BASE, FULLSTACK, _demo, _wait_healthy  # noqa: E402

STATUS_EVERY = 2.0
EDIT_EVERY = 30.0
SWITCH_EVERY = 180.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    minutes = parser.parse_args().minutes
    build_demo_images()
    with remote_host([STANDIN_IMAGE]) as remote, tempfile.TemporaryDirectory() as tmp:
        env = {"PATH": f"{remote.wrapper_dir()}:/usr/local/bin:/usr/bin:/bin"}
        demo = _demo(Path(tmp), {"host": remote.url}, env)
        demo.daemon.env.pop("DOCKER_HOST", None)
        before = remote.accepted_connections()
        statuses: list[float] = []
        commands = edits = switches = 0
        try:
            demo.daemon.start()
            _wait_healthy(demo, BASE, 180, "base services healthy")
            started = time.monotonic()
            next_edit = started + EDIT_EVERY
            next_switch = started + SWITCH_EVERY
            stack = "skeleton"
            while time.monotonic() - started < minutes * 60:
                t0 = time.perf_counter()
                demo.daemon.status()
                statuses.append(time.perf_counter() - t0)
                commands += 1
                now = time.monotonic()
                if now >= next_edit and stack == "skeleton":
                    edits += 1
                    version = f"e{edits}"
                    demo.edit_version(version)

                    def served(v: str = version) -> bool:
                        return http_get(demo.url("PLATFORM_PORT") + "/version") == v

                    wait_until(served, 120, "the edit served")
                    next_edit = now + EDIT_EVERY
                if now >= next_switch:
                    for target, names in (("fullstack", FULLSTACK), ("skeleton", BASE)):
                        done = demo.daemon.cli("switch", target, timeout=300)
                        assert done.returncode == 0, done.stderr
                        _wait_healthy(demo, names, 180, f"{target} healthy")
                        commands += 1
                    switches += 1
                    next_switch = now + SWITCH_EVERY
                time.sleep(STATUS_EVERY)
            connections = remote.accepted_connections() - before
        finally:
            demo.daemon.stop()
            remote.dockerd.remove_project(demo.name)
    print(
        f"remote session of {minutes:g} min: {connections} ssh connection(s); "
        f"{commands} client commands, {edits} platform edits, {switches} switch round trips; "
        f"status median {statistics.median(statuses) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
