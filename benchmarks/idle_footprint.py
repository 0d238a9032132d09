"""Idle footprint on a large tree: devsup against other reloaders, in one run.

Issue 10's targets, on a tree of 50,000 files in 2,000 directories (a third of them `*.go`), with
a tiny Go HTTP server elsewhere that every reloader builds and runs:

    first served <= 0.5 s + build, CPU settled <= 1.5 s, idle CPU <= 0.05 s per 30 s,
    peak RSS <= 40 MB, deep edit -> first process spawned <= 20 ms

For each reloader (devsup; watchfiles from PyPI, nodemon from npm, entr from Debian when they can
be installed) the script measures, from its start:
  - first served: the first `GET /version` answered by the built server (polled every 2 ms);
  - settled: the end of the last 100 ms sample in which the reloader's processes (the server
    excluded) used more than SETTLE_CPU of CPU, observed until SETTLE_QUIET of quiet;
  - idle CPU: CPU time of those processes over an idle window (default 30 s);
  - peak RSS: VmHWM of the reloader's own process (build and server excluded);
  - deep edit: the write of a `*.go` file 4 levels down -> the reloader spawns the build command
    (the command's first act is to append a line to a file the script polls every 0.2 ms).
devsup runs twice: `cold` (fresh state directory: no index, nothing built) and `warm` (a restart
with the state of the cold run: persisted index, sources unchanged since the last build).

Run: `python3 benchmarks/idle_footprint.py [--files 50000] [--idle 30] [--edits 5]
[--only devsup,watchfiles,entr,nodemon] [--growth 10000]`. Every process it starts runs in its
own session and is stopped by process group at the end; the tree lives in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.reload_latency import stop_group  # noqa: E402  (the repo root must be on sys.path first)
from benchmarks.summary import add_row  # noqa: E402
from tests.harness import free_port, private_env  # noqa: E402

# Files per directory: 50,000 files -> 2,000 directories, as in the issue.
FILES_PER_DIR = 25
# Of every FILES_PER_DIR files this many are `*.go` (8/25 = 16,000 of 50,000).
GO_PER_DIR = 8
# A 100 ms sample with more CPU than this counts as busy (1% of one core is 1 ms).
SETTLE_CPU = 0.010
SAMPLE = 0.1
# Quiet time after which a reloader counts as settled; also the longest wait for it.
SETTLE_QUIET = 3.0
SETTLE_TIMEOUT = 60.0
SERVE_TIMEOUT = 30.0
# Between deep edits: long enough for the rebuild to finish and the reloader to go quiet.
EDIT_GAP = 1.5
TARGETS = {"served_minus_build": 0.5, "settled": 1.5, "idle_cpu": 0.05, "rss": 40.0, "edit": 0.020}

SERVER_GO = """package main

import (
\t"fmt"
\t"net/http"
\t"os"
)

const version = "v1"

func main() {
\thttp.HandleFunc("/version", func(w http.ResponseWriter, _ *http.Request) {
\t\tfmt.Fprintln(w, version)
\t})
\t_ = http.ListenAndServe(os.Getenv("ADDR"), nil)
}
"""

WATCHFILES_FILTER = """from watchfiles import DefaultFilter


class GoFilter(DefaultFilter):
    def __call__(self, change, path):
        return path.endswith((".go", "go.mod", "go.sum")) and super().__call__(change, path)
"""


# -- the tree -------------------------------------------------------------------------------


def make_tree(root: Path, files: int, first_dir: int = 0) -> Path:
    """`files` files in files/25 leaf directories three levels down, numbered from `first_dir`
    (so a tree can grow); returns a deep `*.go`."""
    dirs = max(1, files // FILES_PER_DIR)
    deep = root
    for d in range(first_dir, first_dir + dirs):
        leaf = root / f"m{d // 100:03d}" / f"p{(d // 10) % 10}" / f"d{d % 10}"
        leaf.mkdir(parents=True, exist_ok=True)
        for f in range(FILES_PER_DIR):
            suffix = ".go" if f < GO_PER_DIR else (".txt" if f % 2 else ".json")
            body = "x" * (200 + (d * FILES_PER_DIR + f) % 400)
            (leaf / f"f{f}{suffix}").write_text(f"// file {f}\npackage d{d}\n// {body}\n")
        deep = leaf / "f1.go"
    return deep


def make_app(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/idle\n\ngo 1.19\n")
    (root / "main.go").write_text(SERVER_GO)
    return root


# -- measuring --------------------------------------------------------------------------------


def get_version(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"GET /version HTTP/1.0\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)
    return time.perf_counter()


def group_cpu(pgid: int, exclude: set[str]) -> float:
    """CPU seconds of the live processes of a process group, minus those named in `exclude`."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        try:
            if os.getpgid(proc.pid) != pgid or proc.info["name"] in exclude:
                continue
            times = proc.cpu_times()
            total += times.user + times.system
        except (ProcessLookupError, psutil.Error):
            continue
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawned(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class Result:
    name: str
    served: float = float("nan")
    settled: float = float("nan")
    idle_cpu: float = float("nan")
    rss: float = float("nan")
    edits: list[float] = field(default_factory=list)

    @property
    def edit(self) -> float:
        return statistics.median(self.edits) if self.edits else float("nan")


@dataclass
class Reloader:
    """One reloader: its argv, the process whose RSS counts, and where it runs."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    # Name of the process whose peak RSS is reported (its own process, not the shell).
    rss_process: str | None = None
    stdin: Path | None = None
    # Remove the built server first (False: a restart that may reuse what it built before).
    fresh: bool = True


class Bench:
    def __init__(self, base: Path, files: int, idle: float, edits: int) -> None:
        self.base = base
        self.tree = base / "tree"
        self.app = make_app(base / "app")
        self.deep = make_tree(self.tree, files)
        self.dirs = files // FILES_PER_DIR
        self.idle = idle
        self.edits = edits
        self.spawn_log = base / "spawned.log"
        self.port = free_port()
        self.build = f"echo x >> {self.spawn_log}; go build -o bin/app ."

    def build_time(self) -> float:
        """Median of three `go build`s of the app with a warm cache (the floor's build), each
        without the binary, as every run that counts it starts: with `bin/app` in place and up to
        date, go skips the link, and the floor would be a third of the build the runs do."""
        subprocess.run(["go", "build", "-o", "bin/app", "."], cwd=self.app, check=True)
        times = []
        for _ in range(3):
            shutil.rmtree(self.app / "bin")
            started = time.perf_counter()
            subprocess.run(["go", "build", "-o", "bin/app", "."], cwd=self.app, check=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def grow(self, files: int) -> None:
        """Add `files` more files to the tree (new directories)."""
        if files <= 0:
            return
        make_tree(self.tree, files, first_dir=self.dirs)
        self.dirs += files // FILES_PER_DIR

    def run(self, reloader: Reloader, *, full: bool = True) -> Result:
        """Start `reloader`, measure, stop it. Not `full`: start-up and peak RSS only."""
        result = Result(reloader.name)
        if reloader.fresh:
            shutil.rmtree(self.app / "bin", ignore_errors=True)
        self.spawn_log.unlink(missing_ok=True)
        stdin = reloader.stdin.open("rb") if reloader.stdin else subprocess.DEVNULL
        started = time.perf_counter()
        proc = subprocess.Popen(
            reloader.argv,
            cwd=reloader.cwd,
            env=reloader.env,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=(self.base / f"{reloader.name}.err").open("wb"),
            start_new_session=True,
        )
        try:
            try:
                served = wait_for(lambda: get_version(self.port), SERVE_TIMEOUT, 0.002, "served")
            except TimeoutError:
                tail = (self.base / f"{reloader.name}.err").read_text()[-3000:]
                raise TimeoutError(f"{reloader.name} never served; stderr tail:\n{tail}") from None
            result.served = served - started
            result.settled = self._settled(proc.pid, started)
            if not full:
                result.rss = peak_rss_mb(self._rss_pid(proc.pid, reloader.rss_process))
                return result
            before = group_cpu(proc.pid, {"app"})
            time.sleep(self.idle)
            result.idle_cpu = (group_cpu(proc.pid, {"app"}) - before) * 30.0 / self.idle
            for n in range(self.edits):
                try:
                    result.edits.append(self._deep_edit(n))
                except TimeoutError:
                    print(f"  {reloader.name}: deep edit {n} spawned nothing within 30 s")
                time.sleep(EDIT_GAP)
            result.rss = peak_rss_mb(self._rss_pid(proc.pid, reloader.rss_process))
        finally:
            stop_group(proc)
        return result

    def _settled(self, pgid: int, started: float) -> float:
        """Seconds from start to the end of the last busy sample (see SETTLE_CPU)."""
        last_busy = time.perf_counter()
        previous = group_cpu(pgid, {"app"})
        deadline = started + SETTLE_TIMEOUT
        while time.perf_counter() - last_busy < SETTLE_QUIET and time.perf_counter() < deadline:
            time.sleep(SAMPLE)
            now = group_cpu(pgid, {"app"})
            if now - previous > SETTLE_CPU:
                last_busy = time.perf_counter()
            previous = now
        return last_busy - started

    def _deep_edit(self, n: int) -> float:
        before = spawned(self.spawn_log)
        text = self.deep.read_text()
        saved = time.perf_counter()
        self.deep.write_text(f"{text}// edit {n}\n")
        seen = wait_for(lambda: spawned(self.spawn_log) != before, 30.0, 0.0002, "spawn")
        return seen - saved

    @staticmethod
    def _rss_pid(pgid: int, name: str | None) -> int:
        if name is None:
            return pgid
        for proc in psutil.process_iter(["name", "cmdline"]):
            with suppress(ProcessLookupError, psutil.Error):
                if os.getpgid(proc.pid) == pgid and name in (proc.info["cmdline"] or [])[:3]:
                    return proc.pid
        return pgid


# -- the reloaders ------------------------------------------------------------------------------


def devsup(bench: Bench, env: dict[str, str]) -> Reloader:
    config = bench.base / "devsup.json"
    config.write_text(
        json.dumps(
            {
                "project": "idle-bench",
                "compose": {"files": []},
                "stacks": {"bench": {"platform": "binary"}},
                "platform": {
                    "watch": {
                        "paths": [str(bench.tree), str(bench.app)],
                        "include": ["**/*.go", "go.mod", "go.sum"],
                        "ignore": ["bin/**"],
                    },
                    "binary": {
                        "workdir": str(bench.app),
                        "build": bench.build,
                        "run": "./bin/app",
                        "env": {"ADDR": f"127.0.0.1:{bench.port}"},
                        "ready": {"http": f"http://127.0.0.1:{bench.port}/version"},
                    },
                },
            }
        )
    )
    argv = [sys.executable, "-m", "devsupervisor", "run", "--config", str(config)]
    return Reloader("devsup", argv, bench.base, env)


def shell_command(bench: Bench) -> str:
    return f"cd {bench.app} && {bench.build} && exec ./bin/app"


def watchfiles(bench: Bench, tools: Path) -> Reloader | None:
    target = tools / "py"
    if not (target / "watchfiles").exists():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "watchfiles"]
        if subprocess.run(pip, check=False).returncode != 0:
            return None
    (target / "gofilter.py").write_text(WATCHFILES_FILTER)
    env = {**os.environ, "PYTHONPATH": str(target), "ADDR": f"127.0.0.1:{bench.port}"}
    argv = [sys.executable, "-m", "watchfiles", "--filter", "gofilter.GoFilter"]
    argv += [f"sh -c '{shell_command(bench)}'", str(bench.tree), str(bench.app)]
    return Reloader("watchfiles", argv, bench.base, env, rss_process="watchfiles")


def nodemon(bench: Bench, tools: Path) -> Reloader | None:
    binary = tools / "node" / "node_modules" / ".bin" / "nodemon"
    if not binary.exists() and shutil.which("npm"):
        npm = ["npm", "install", "-s", "--prefix", str(tools / "node"), "nodemon"]
        subprocess.run(npm, check=False, stdout=subprocess.DEVNULL)
    if not binary.exists():
        return None
    env = {**os.environ, "ADDR": f"127.0.0.1:{bench.port}"}
    # SIGTERM: nodemon's default SIGUSR2 is ignored by a Go program that does not ask for it.
    argv = [str(binary), "--quiet", "--delay", "0", "--signal", "SIGTERM", "--ext", "go,mod,sum"]
    argv += ["--watch", str(bench.tree), "--watch", str(bench.app)]
    argv += ["--ignore", str(bench.app / "bin"), "--exec", shell_command(bench)]
    return Reloader("nodemon", argv, bench.base, env, rss_process=str(binary))


def entr(bench: Bench) -> Reloader | None:
    if shutil.which("entr") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "entr"], check=False)
    if shutil.which("entr") is None:
        return None
    listing = bench.base / "entr.files"
    found = [*bench.tree.rglob("*.go"), bench.app / "main.go", bench.app / "go.mod"]
    listing.write_text("".join(f"{p}\n" for p in found))
    env = {**os.environ, "ADDR": f"127.0.0.1:{bench.port}"}
    argv = ["entr", "-n", "-r", "sh", "-c", shell_command(bench)]
    return Reloader("entr", argv, bench.base, env, stdin=listing)


def print_timeline(log: Path) -> None:
    """The daemon's start-up events of its last run, in seconds after daemon.started."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    starts = [i for i, e in enumerate(events) if e.get("event") == "daemon.started"]
    if not starts:
        return
    run = events[starts[-1] :]
    first = datetime.fromisoformat(run[0]["ts"].replace("Z", "+00:00"))
    for event in run[:20]:
        at = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")) - first
        keys = ("duration", "files", "hashed", "reused", "listed")
        extra = " ".join(f"{k}={event[k]}" for k in keys if k in event)
        print(f"    {at.total_seconds():6.3f} {event['event']} {extra}")


# -- report --------------------------------------------------------------------------------------


Measure = tuple[str, Callable[[Result], float], Callable[[float], str], float | None]


def measures(build: float) -> list[Measure]:
    """(label, value of a result, format, target) for each row of the table."""
    return [
        ("first served after start", lambda r: r.served, lambda v: f"{v:.2f} s", None),
        (
            f"first served - build ({build:.2f} s)",
            lambda r: r.served - build,
            lambda v: f"{v:.2f} s",
            TARGETS["served_minus_build"],
        ),
        ("CPU settled after", lambda r: r.settled, lambda v: f"{v:.1f} s", TARGETS["settled"]),
        ("CPU over 30 s idle", lambda r: r.idle_cpu, lambda v: f"{v:.2f} s", TARGETS["idle_cpu"]),
        ("peak RSS", lambda r: r.rss, lambda v: f"{v:.0f} MB", TARGETS["rss"]),
        (
            "deep edit -> first process spawned",
            lambda r: r.edit,
            lambda v: f"{v * 1000:.0f} ms",
            TARGETS["edit"],
        ),
    ]


def report(results: Sequence[Result], build: float, files: int) -> None:
    """The table (reloaders as columns), and the rows for run_all's results table."""
    print(f"\n== idle footprint, {files} files ({files // FILES_PER_DIR} dirs)")
    print("| | " + " | ".join(r.name for r in results) + " | target |")
    print("|---|" + "---|" * (len(results) + 1))
    ours = [r for r in results if r.name.startswith("devsup")]
    for label, value, fmt, target in measures(build):
        goal = f"<= {fmt(target)}" if target is not None else ""
        print(f"| {label} | " + " | ".join(fmt(value(r)) for r in results) + f" | {goal} |")
        if not ours:
            continue
        add_row(
            f"idle_footprint ({files // 1000}k files)",
            label,
            " / ".join(f"{r.name.removeprefix('devsup ')} {fmt(value(r))}" for r in ours),
            reference=", ".join(f"{r.name} {fmt(value(r))}" for r in results if r not in ours),
            target=goal,
            met=None if target is None else all(value(r) <= target for r in ours),
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="files in the tree")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--edits", type=int, default=5, help="deep edits per reloader")
    parser.add_argument("--only", default="devsup,watchfiles,entr,nodemon")
    parser.add_argument(
        "--growth",
        type=int,
        default=10_000,
        help="then add this many files and start devsup again: RSS growth (0: skip)",
    )
    return parser.parse_args(argv)


def devsup_env() -> dict[str, str]:
    """Private XDG dirs, and bytecode cached as for an installed package (pip compiles at
    install; an editable checkout under PYTHONDONTWRITEBYTECODE would compile every start)."""
    env = private_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall = [sys.executable, "-m", "compileall", "-q", str(REPO / "devsupervisor")]
    subprocess.run(compileall, check=True, env=env, stdout=subprocess.DEVNULL)
    return env


def run_devsup(bench: Bench, results: list[Result]) -> None:
    """devsup cold (fresh state), then warm (restarted on the state the cold run left)."""
    env = devsup_env()
    log = Path(env["XDG_STATE_HOME"]) / "devsup" / "idle-bench.log"
    try:
        for label in ("devsup cold", "devsup warm"):
            reloader = devsup(bench, env)
            reloader.name = label
            reloader.fresh = label == "devsup cold"
            results.append(bench.run(reloader))
            print(f"  {label} done; its start, from the daemon's log:", flush=True)
            print_timeline(log)
    finally:
        shutil.rmtree(Path(env["XDG_STATE_HOME"]).parent, ignore_errors=True)


def measure_growth(bench: Bench, growth: int) -> None:
    """Peak RSS of a cold devsup start on the tree, then on the tree with `growth` more files."""
    peaks = []
    for step in (0, growth):
        bench.grow(step)
        env = devsup_env()
        try:
            peaks.append(bench.run(devsup(bench, env), full=False).rss)
        finally:
            shutil.rmtree(Path(env["XDG_STATE_HOME"]).parent, ignore_errors=True)
    per_10k = (peaks[1] - peaks[0]) * 10_000 / growth
    print(
        f"\n== peak RSS, cold start: {peaks[0]:.1f} MB -> {peaks[1]:.1f} MB with {growth} more "
        f"files: {per_10k:.1f} MB per 10,000 files"
    )
    add_row(
        "idle_footprint",
        "peak RSS growth per 10,000 more files",
        f"{per_10k:.1f} MB",
        reference=f"cold start {peaks[0]:.1f} MB -> {peaks[1]:.1f} MB (+{growth} files)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Started in the background by a non-interactive shell, this process (and so every child)
    # would ignore SIGINT, and watchfiles stops its child with SIGINT: make it the default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    wanted = args.only.split(",")
    print(f"cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}; files: {args.files}")
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        base = Path(tmp)
        bench = Bench(base, args.files, args.idle, args.edits)
        build = bench.build_time()
        print(f"tree ready; go build of the app: {build:.2f} s", flush=True)
        results: list[Result] = []
        if "devsup" in wanted:
            run_devsup(bench, results)
        tools = base / "tools"
        makers: dict[str, Callable[[], Reloader | None]] = {
            "watchfiles": lambda: watchfiles(bench, tools),
            "entr": lambda: entr(bench),
            "nodemon": lambda: nodemon(bench, tools),
        }
        for name, make in makers.items():
            if name not in wanted:
                continue
            peer = make()
            if peer is None:
                print(f"  {name}: could not be installed, skipped")
                continue
            results.append(bench.run(peer))
            print(f"  {name} done", flush=True)
        report(results, build, args.files)
        if "devsup" in wanted and args.growth:
            measure_growth(bench, args.growth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
