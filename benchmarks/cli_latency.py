"""CLI latency: wall time of `devsup status` against a running daemon, vs a bare interpreter.

Issue 8's target: `devsup status` within 2x a bare interpreter start (`python -c pass`, same
interpreter). The script
  1. starts `devsup run` on a throwaway fake project (the lifecycle tests' fake build and
     platform, no Docker) with private XDG dirs, and waits until its platform is running;
  2. times, hyperfine-like, N runs of each command after W warm-up runs, one after the other
     and interleaved round-robin so machine load falls on all of them alike:
     - `python -c pass` (the floor),
     - `devsup status` from the project directory (the socket found through ./devsup.yaml's
       `project:`, as users run it),
     - `devsup status --project NAME` (no config read at all),
     - `devsup status --json`;
  3. prints median/min/mean/max per command and the ratio of each median (and each minimum,
     steadier on a busy machine) to the floor's.

Bytecode: an installed package has its .pyc files, so the timed runs cache bytecode (in a
private PYTHONPYCACHEPREFIX, even when PYTHONDONTWRITEBYTECODE is set); `--no-bytecode-cache`
times the compile-every-run case instead. `--client-tree DIR` runs the client from another
checkout's `devsupervisor` (e.g. `git archive OLD devsupervisor | tar -x -C DIR`) against the
same daemon, for before/after figures.

Run: `python3 benchmarks/cli_latency.py [--runs N] [--warmup W] [--no-bytecode-cache]
[--client-tree DIR]`.
The daemon runs in its own process and is stopped (SIGTERM, then kill) before the script exits.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import (  # noqa: E402  (the repo root must be on sys.path first)
    DaemonProcess,
    FakeProject,
    private_env,
)

PROJECT = "clibench"
# Issue 8's budget: the client command may cost at most twice a bare interpreter start.
TARGET_RATIO = 2.0


def time_once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per command first")
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="compile the package on every run"
    )
    parser.add_argument("--client-tree", help="directory holding the devsupervisor to time")
    options = parser.parse_args()

    devsup = str(Path(sys.executable).parent / "devsup")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "devsup status": [devsup, "status"],
        "devsup status --project": [devsup, "status", "--project", PROJECT],
        "devsup status --json": [devsup, "status", "--json"],
    }
    root = Path(tempfile.mkdtemp(prefix="dsbench", dir="/tmp"))
    project = FakeProject(root / "proj", project=PROJECT)
    env = private_env()
    daemon = DaemonProcess(project.config, env=dict(env), project=PROJECT).start()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if options.no_bytecode_cache:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    if options.client_tree:
        env["PYTHONPATH"] = str(Path(options.client_tree).resolve())
    try:
        daemon.wait_platform("running", timeout=60)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.warmup):
            for argv in commands.values():
                time_once(argv, project.root, env)
        for _ in range(options.runs):
            for name, argv in commands.items():
                times[name].append(time_once(argv, project.root, env))
    finally:
        daemon.stop()

    floor = statistics.median(times["python -c pass"])
    floor_min = min(times["python -c pass"])
    header = f"{'command':<26} {'median':>8} {'min':>8} {'mean':>8} {'max':>8}"
    print(f"{header} {'x floor':>8} {'(min)':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<26} {median * 1000:7.1f}ms {min(values) * 1000:7.1f}ms "
            f"{statistics.fmean(values) * 1000:7.1f}ms {max(values) * 1000:7.1f}ms "
            f"{median / floor:7.2f}x {min(values) / floor_min:5.2f}x"
        )
    status = statistics.median(times["devsup status"])
    verdict = "within" if status <= TARGET_RATIO * floor else "OVER"
    print(
        f"devsup status median {status * 1000:.1f} ms: {verdict} the target of "
        f"{TARGET_RATIO:g}x the bare interpreter ({TARGET_RATIO * floor * 1000:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
