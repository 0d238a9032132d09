"""Container-mode reload: from an editor save to the new version served by the new container.

Issue 10's target: in container mode devsup's median from save to new version served stays
within 50 ms of the floor (issue 3 allowed 150 ms), measured in the same run, and reported as
the overhead devsup - floor:

    floor = host `go build` + image build + recreate + first response

Each reloader has its own compose project on free ports, its own copy of the platform sources
and its own image tag (the two floors share one project: they recreate its container in turn).
devsup's project runs the whole fullstack stack; the others run only the platform and what it
depends on (`up --no-deps platform` never touches the fullstack-only services, and their
healthchecks would only add load). Per round, in rotating order, one lone edit of
`const version` (saved by rename) for each of:
  naive:   CGO_ENABLED=0 go build, `docker compose build platform`, `up -d --no-deps platform`,
           then poll the published port until /version answers the new value;
  events:  the same, but after `up` wait for the new container's `health_status: healthy` event
           (Docker's own signal), then GET /version;
  devsup:  `devsup run --stack fullstack`; the save is all this script does. Once the new
           platform container's `start` event arrives it polls /version (the old container
           serves until the recreate; no probe stalled after the start event here), then waits
           for the healthy event, which is when devsup itself calls the platform ready. The
           daemon's `platform.last_reload` gives its breakdown (detect, build = prebuild +
           image, start = `up --no-deps` + container lookup, ready = start -> healthy);
  watch:   (optional) `docker compose watch` with `develop.watch: rebuild` on bin/platform and a
           host watcher (watchdog, in this process) running the Go build on each save; measured
           like devsup.
The floor is the better (lower median) of naive and events. All docker events are read by one
thread of this script and stamped on arrival, which also gives each step's share. The summary
compares both "new version served" and "healthy event" (devsup's own readiness) to the floor.

Run: `python3 benchmarks/container_reload.py [--trials N] [--no-watch]`. Everything created is
removed at the end (containers, volumes and networks by project label, image tags, the daemon
by its pid, `compose watch` by its process group).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
import yaml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.reload_latency import (  # noqa: E402  (the repo root must be on sys.path first)
    Series,
    ms,
    print_series,
    set_version,
    stop_group,
    temp_dir,
)
from benchmarks.summary import add_row  # noqa: E402
from tests.docker_env import (  # noqa: E402
    DEMO_STACK,
    PLATFORM_DIR,
    PROJECT_LABEL,
    demo_port_env,
    remove_project,
    unique_project,
)
from tests.harness import DaemonProcess, private_env, wait_until  # noqa: E402
from tests.stack_env import write_config  # noqa: E402

FILES = ("docker-compose.yaml", "docker-compose.monolith.yaml", "docker-compose.fullstack.yaml")
SERVICE = "platform"
GO_BUILD = ["go", "build", "-o", "bin/platform", "./cmd"]
# The budget for devsup over the floor.
TARGET_OVERHEAD = 0.050
# How often /version is polled: fine enough for the ~1 s figures measured here.
POLL_INTERVAL = 0.005
# A probe that lands in the post-recreate stall hangs about a second: let it, so the naive
# figure shows the stall instead of a timeout and a retry.
PROBE_TIMEOUT = 5.0
# How often the event list is looked at while waiting for a docker event.
EVENT_POLL = 0.002
# Quiet time between saves: lone saves (well above devsup's 0.1 s debounce and compose
# watch's 0.5 s quiet period), and time for the previous container's removal to settle.
QUIET_GAP = 1.0
# Longest any single reload may take before the run is declared broken.
RELOAD_TIMEOUT = 120.0


def deadline() -> float:
    return time.perf_counter() + RELOAD_TIMEOUT


# -- docker events, stamped on arrival ----------------------------------------------------------


@dataclass(frozen=True)
class DockerEvent:
    received: float  # perf_counter when this script read it
    engine: float  # the engine's own timestamp (wall clock)
    wall: float  # wall clock when read (engine -> reader latency = wall - engine)
    project: str
    service: str
    container: str
    action: str


class EventLog:
    """One `docker events` stream (container start/health_status/die) read by a thread."""

    def __init__(self) -> None:
        self.client = docker.from_env()
        self.events: list[DockerEvent] = []
        self._stream: Any = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._stream = self.client.events(
            decode=True,
            filters={"type": "container", "event": ["start", "health_status", "die"]},
        )
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                received, wall = time.perf_counter(), time.time()
                attrs = raw.get("Actor", {}).get("Attributes", {})
                self.events.append(
                    DockerEvent(
                        received=received,
                        engine=int(raw.get("timeNano", 0)) / 1e9,
                        wall=wall,
                        project=attrs.get(PROJECT_LABEL, ""),
                        service=attrs.get("com.docker.compose.service", ""),
                        container=str(raw.get("id", "")),
                        action=str(raw.get("status") or raw.get("Action") or ""),
                    )
                )
        except Exception:  # the stream is closed under the reader at the end of the run
            return

    def wait(
        self, project: str, action: str, after: float, until: float, *, exclude: str = ""
    ) -> DockerEvent:
        """The first `action` event of the project's platform container read after `after`."""
        while True:
            for event in list(self.events):
                if (
                    event.received >= after
                    and event.project == project
                    and event.service == SERVICE
                    and event.action.startswith(action)
                    and event.container != exclude
                ):
                    return event
            if time.perf_counter() > until:
                raise TimeoutError(f"no {action!r} event for {project}/{SERVICE}")
            time.sleep(EVENT_POLL)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._thread.join(timeout=5)


def poll_until_version(port: int, wanted: str, until: float) -> float:
    """GET /version (fresh connection each time) until it returns `wanted`; return that moment."""
    while True:
        if get_version_slow(port) == wanted:
            return time.perf_counter()
        if time.perf_counter() > until:
            raise TimeoutError(f"/version on :{port} did not serve {wanted!r}")
        time.sleep(POLL_INTERVAL)


def get_version_slow(port: int) -> str | None:
    """`get_version` with a timeout long enough to see a stalled connection through."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            chunks: list[bytes] = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or status_line[1] != b"200":
        return None
    return body.decode(errors="replace").strip()


# -- one compose project per reloader -----------------------------------------------------------


class Project:
    """A unique fullstack project of the demo stack with its own sources copy and image tag."""

    def __init__(self, base: Path, prefix: str) -> None:
        self.name = unique_project(prefix)
        base.mkdir(parents=True)
        self.base = base
        self.sources = base / "platform-services"
        shutil.copytree(PLATFORM_DIR, self.sources, ignore=shutil.ignore_patterns("bin"))
        self.image = f"devsup-bench/{self.name}:local"
        self.ports = demo_port_env()
        self.port = int(self.ports["PLATFORM_PORT"])
        self.env = {
            **os.environ,
            **self.ports,
            "PLATFORM_CONTEXT": str(self.sources),
            "PLATFORM_IMAGE": self.image,
        }
        self.extra_files: list[Path] = []

    def compose_argv(self, *args: str) -> list[str]:
        argv = ["docker", "compose", "--ansi", "never", "-p", self.name]
        for name in FILES:
            argv += ["-f", str(DEMO_STACK / name)]
        for path in self.extra_files:
            argv += ["-f", str(path)]
        return [*argv, "--profile", "fullstack", *args]

    def compose(self, *args: str) -> float:
        started = time.perf_counter()
        result = subprocess.run(
            self.compose_argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RELOAD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} failed:\n{result.stderr}")
        return time.perf_counter() - started

    def go_build(self) -> float:
        started = time.perf_counter()
        subprocess.run(
            GO_BUILD,
            cwd=self.sources,
            env={**self.env, "CGO_ENABLED": "0"},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    def up_compose(self) -> None:
        """Host build, image build, the platform and what it depends on up and healthy.

        The fullstack-only services are left out: `up --no-deps platform` never touches them,
        and their healthchecks would only add load (every probe is a `docker exec`).
        """
        set_version(self.sources, f"{self.name}-0")
        self.go_build()
        self.compose("build", "--quiet", SERVICE)
        self.compose("up", "-d", "--wait", SERVICE)

    def cleanup(self) -> None:
        remove_project(self.name)
        subprocess.run(["docker", "rmi", "-f", self.image], capture_output=True, check=False)


class Reloader(Protocol):
    series: Series

    def start(self) -> None: ...

    def trial(self, n: int) -> dict[str, float]: ...

    def stop(self) -> None: ...


class Floor:
    """By hand: go build, compose build, up --no-deps, then first response (naive or events)."""

    def __init__(self, project: Project, events: EventLog, *, wait_healthy: bool) -> None:
        self.wait_healthy = wait_healthy
        kind = "events" if wait_healthy else "naive"
        # Both floors recreate the same project's container in turn (one stack less running).
        self.project = project
        self.events = events
        first = (
            "healthy = up returned -> healthy event; first = -> GET answered"
            if wait_healthy
            else "first = up returned -> the port poll got the new version"
        )
        self.series = Series(f"floor ({kind}): go build + image + up --no-deps + first", first)

    def start(self) -> None:
        if not self.wait_healthy:  # the naive one starts the shared project
            self.project.up_compose()

    def trial(self, n: int) -> dict[str, float]:
        project = self.project
        tag = f"{'ev' if self.wait_healthy else 'nv'}{n}"
        until = deadline()
        saved = set_version(project.sources, tag)
        build = project.go_build()
        image = project.compose("build", "--quiet", SERVICE)
        t_up = time.perf_counter()
        up = project.compose("up", "-d", "--no-deps", SERVICE)
        upped = time.perf_counter()
        started = self.events.wait(project.name, "start", t_up, until)
        healthy = "health_status: healthy"
        if self.wait_healthy:
            healthy_at = self.events.wait(project.name, healthy, t_up, until).received
        served = poll_until_version(project.port, tag, until)
        if not self.wait_healthy:
            healthy_at = self.events.wait(project.name, healthy, t_up, until).received
        return {
            "build": build,
            "image": image,
            "up": up,
            "start_evt": started.received - t_up,
            "healthy": healthy_at - upped,
            "first": served - upped,
            "total": served - saved,
            "to_healthy": healthy_at - saved,
        }

    def stop(self) -> None:
        self.project.cleanup()


class Devsup:
    """`devsup run --stack fullstack`: save -> healthy event of the new container -> GET."""

    def __init__(self, base: Path, events: EventLog) -> None:
        self.project = Project(base, "dsbench-dev")
        self.events = events
        self.config = base / "devsup.yaml"
        write_config(self.config, self.project.name, self.project.sources, str(self.project.port))
        env = {k: self.project.env[k] for k in ("PLATFORM_CONTEXT", "PLATFORM_IMAGE")}
        self.daemon = DaemonProcess(
            self.config,
            env={**private_env(), **self.project.ports, **env},
            project=self.project.name,
        )
        self.previous: Any = None
        self.series = Series(
            "devsup: save -> new version served",
            "detect..total are status.platform.last_reload; start_evt/healthy from docker events",
        )

    def start(self) -> None:
        set_version(self.project.sources, "dev0")
        self.daemon.start("--stack", "fullstack")
        status = self.daemon.wait_platform("running", timeout=RELOAD_TIMEOUT)
        self.previous = status["platform"]["last_reload"]

    def trial(self, n: int) -> dict[str, float]:
        tag = f"dev{n}"
        until = deadline()
        old = str(self.daemon.status()["platform"]["container"])
        saved = set_version(self.project.sources, tag)
        name = self.project.name
        # Probing is safe from the new container's `start` event on (no stall seen after it);
        # until then the old container answers, or nothing does during the recreate.
        started = self.events.wait(name, "start", saved, until, exclude=old)
        served = poll_until_version(self.project.port, tag, until)
        healthy = self.events.wait(name, "health_status: healthy", saved, until, exclude=old)
        status = wait_until(
            lambda: (
                (s := self.daemon.status())["platform"]["state"] == "running"
                and s["platform"]["last_reload"] != self.previous
                and s
            ),
            timeout=30,
            what="the reload recorded in status",
        )
        reload: dict[str, float] = status["platform"]["last_reload"]
        self.previous = reload
        return {
            "save_served": served - saved,
            "start_evt": started.received - saved,
            "healthy_evt": healthy.received - saved,
            **{k: float(v) for k, v in reload.items()},
        }

    def stop(self) -> None:
        code = self.daemon.stop()
        shutil.rmtree(Path(self.daemon.env["XDG_RUNTIME_DIR"]).parent, ignore_errors=True)
        self.project.cleanup()
        if code not in (0, None):
            print(f"warning: devsup exited with {code}; output tail:\n{self.daemon.log_tail()}")


class _GoBuildOnSave(FileSystemEventHandler):
    """The host half of a compose-watch setup: `go build` whenever a .go file is saved."""

    def __init__(self, build: Callable[[], float]) -> None:
        self._build = build
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = str(getattr(event, "dest_path", "") or event.src_path)
        if event.event_type in ("modified", "moved", "created") and path.endswith(".go"):
            with self._lock:
                self._build()


class ComposeWatch:
    """`docker compose watch` (rebuild on bin/platform) plus a host watcher doing the Go build."""

    def __init__(self, base: Path, events: EventLog) -> None:
        self.project = Project(base, "dsbench-watch")
        self.events = events
        override = base / "watch.yaml"
        watch = [{"action": "rebuild", "path": str(self.project.sources / "bin" / "platform")}]
        override.write_text(yaml.safe_dump({"services": {SERVICE: {"develop": {"watch": watch}}}}))
        self.project.extra_files.append(override)
        self.proc: subprocess.Popen[bytes] | None = None
        self.observer: Any = None
        self.log = base / "watch.log"
        self.series = Series("compose watch + host go build: save -> new version served", "")

    def start(self) -> None:
        self.project.up_compose()
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.project.compose_argv("watch", "--no-up"),
            env=self.project.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        wait_until(
            lambda: "watch enabled" in self.log.read_text(errors="replace").lower(),
            timeout=60,
            what=f"compose watch to start (log: {self.log})",
        )
        self.observer = Observer()
        self.observer.schedule(
            _GoBuildOnSave(self.project.go_build), str(self.project.sources / "cmd")
        )
        self.observer.start()

    def trial(self, n: int) -> dict[str, float]:
        tag = f"cw{n}"
        until = deadline()
        name = self.project.name
        saved = set_version(self.project.sources, tag)
        started = self.events.wait(name, "start", saved, until)
        served = poll_until_version(self.project.port, tag, until)
        healthy = self.events.wait(name, "health_status: healthy", saved, until)
        return {
            "save_served": served - saved,
            "start_evt": started.received - saved,
            "healthy_evt": healthy.received - saved,
        }

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
        if self.proc is not None:
            stop_group(self.proc)
        self.project.cleanup()


# -- main ---------------------------------------------------------------------------------------


def run_rounds(reloaders: Sequence[Reloader], trials: int) -> None:
    """Round-robin, order rotated each round, so load from elsewhere falls on all alike."""
    for n in range(1, trials + 1):
        order = [*reloaders[n % len(reloaders) :], *reloaders[: n % len(reloaders)]]
        for reloader in order:
            time.sleep(QUIET_GAP)
            reloader.series.add(reloader.trial(n))
        print(f"  round {n}/{trials} done", flush=True)


def median_of(series: Series, a: str, b: str, *, sign: int = -1) -> float:
    """Median over trials of `a - b` (or `a + b` with sign=1)."""
    pairs = zip(series.columns[a], series.columns[b], strict=True)
    return statistics.median(x + sign * y for x, y in pairs)


def summarise(
    naive: Series, events: Series, devsup: Series, watch: Series | None, log: EventLog
) -> None:
    floors = {"naive": naive.median("total"), "events": events.median("total")}
    best = min(floors, key=lambda k: floors[k])
    floor = floors[best]
    dev = devsup.median("save_served")
    healthy_floor = min(naive.median("to_healthy"), events.median("to_healthy"))
    dev_healthy = devsup.median("healthy_evt")
    rows = [
        ("floor (naive port poll)", floors["naive"]),
        ("floor (healthy event, then GET)", floors["events"]),
        (f"floor used ({best})", floor),
        ("devsup: save -> served", dev),
    ]
    if watch is not None:
        rows.append(("compose watch: save -> served", watch.median("save_served")))
    rows.append(("devsup - floor", dev - floor))
    if watch is not None:
        rows.append(("compose watch - floor", watch.median("save_served") - floor))
    rows += [
        ("floor: save -> healthy event", healthy_floor),
        ("devsup: save -> healthy event (its ready)", dev_healthy),
        ("devsup - floor, to the healthy event", dev_healthy - healthy_floor),
        ("floor go build", events.median("build")),
        ("floor image build", events.median("image")),
        ("floor go build + image", median_of(events, "build", "image", sign=1)),
        ("devsup build (prebuild + image)", devsup.median("build")),
        ("floor up --no-deps", events.median("up")),
        ("devsup start (up --no-deps + lookup)", devsup.median("start")),
        ("floor up returned -> naive GET served", naive.median("first")),
        ("floor up returned -> healthy event", events.median("healthy")),
        ("devsup ready (started -> healthy)", devsup.median("ready")),
        ("devsup start event -> served", median_of(devsup, "save_served", "start_evt")),
    ]
    print("\n== summary (medians, ms)")
    for label, value in rows:
        print(f"  {label:<42}{ms(value):>9}")
    lag = [e.wall - e.engine for e in log.events if e.engine]
    if lag:
        print(f"  docker events engine -> reader: median {ms(statistics.median(lag))}, "
              f"max {ms(max(lag))} (n={len(lag)})")  # fmt: skip
    for what, value in (("served", dev - floor), ("healthy", dev_healthy - healthy_floor)):
        verdict = "MET" if value <= TARGET_OVERHEAD else "MISSED"
        print(f"  target devsup - floor <= {ms(TARGET_OVERHEAD)} ms ({what}): {verdict}")
    reference = f"floor ({best}) {floor:.3f} s"
    if watch is not None:
        reference += f"; compose watch {watch.median('save_served'):.3f} s"
    add_row("container_reload", "save -> new version served", f"{dev:.3f} s", reference=reference)
    add_row(
        "container_reload",
        "overhead: devsup - floor",
        f"{(dev - floor) * 1000:+.0f} ms",
        reference=f"to the healthy event {(dev_healthy - healthy_floor) * 1000:+.0f} ms",
        target=f"<= {TARGET_OVERHEAD * 1000:.0f} ms",
        met=dev - floor <= TARGET_OVERHEAD,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="saves per reloader (default 8)")
    parser.add_argument(
        "--no-watch", action="store_true", help="skip the `docker compose watch` comparison"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    built = subprocess.run(
        [DEMO_STACK / "build-images"], check=False, capture_output=True, text=True
    )
    if built.returncode != 0:
        print(f"examples/demo-stack/build-images failed:\n{built.stderr}", file=sys.stderr)
        return 2
    print(f"cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}; trials: {args.trials}")
    log = EventLog()
    log.start()
    with temp_dir() as base:
        floor = Project(base / "floor", "dsbench-floor")
        naive = Floor(floor, log, wait_healthy=False)
        events = Floor(floor, log, wait_healthy=True)
        devsup = Devsup(base / "devsup", log)
        reloaders: list[Reloader] = [naive, events, devsup]
        watch: ComposeWatch | None = None
        if not args.no_watch:
            watch = ComposeWatch(base / "watch", log)
            reloaders.append(watch)
        try:
            for reloader in reloaders:
                reloader.start()
            print("running " + ", ".join(r.series.name.split(":")[0] for r in reloaders))
            run_rounds(reloaders, args.trials)
        finally:
            for reloader in reloaders:
                reloader.stop()
            log.close()
        for reloader in reloaders:
            print_series(reloader.series)
        summarise(naive.series, events.series, devsup.series, watch.series if watch else None, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
