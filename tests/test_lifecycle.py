"""The host-binary lifecycle on real processes: build first, swap on success, crash handling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

from devsupervisor.config.model import BinaryConfig
from devsupervisor.platform.binary import BinaryTarget, build_outputs, run_executable
from devsupervisor.platform.build import BuildResult, run_command
from tests.harness import FIXTURES, DaemonProcess, FakeProject, wait_until


def _start(daemon: DaemonProcess, project: FakeProject) -> dict:
    daemon.start()
    status = daemon.wait_platform("running")
    assert project.version() == "v1"
    return status


def test_swap_on_success(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """A source change builds, then the new artefact replaces the old one and serves."""
    first = _start(daemon, fake_project)
    fake_project.set_source("v2")
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")
    status = daemon.wait_platform("running")
    assert status["platform"]["pid"] != first["platform"]["pid"]
    assert (
        not psutil.pid_exists(first["platform"]["pid"])
        or psutil.Process(first["platform"]["pid"]).status() == psutil.STATUS_ZOMBIE
    )
    build = status["platform"]["last_build"]
    assert build["ok"] and build["trigger"] == [str(fake_project.root / "src" / "app.txt")]
    reload = status["platform"]["last_reload"]
    assert set(reload) == {"detect", "build", "stop", "start", "ready", "total"}
    assert reload["total"] >= reload["build"]


def test_failed_build_keeps_old_one_serving(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """A failed build leaves the old process serving; status shows the compiler's tail."""
    first = _start(daemon, fake_project)
    fake_project.set_source("v2 BROKEN")
    status = daemon.wait_platform("build_failed")
    assert status["platform"]["pid"] == first["platform"]["pid"]
    assert "unexpected BROKEN" in status["platform"]["last_build"]["error"]
    assert fake_project.version() == "v1"
    failed = daemon.wait_event("build.failed")[-1]
    assert failed["exit_code"] == 2 and "unexpected BROKEN" in failed["output"]
    fake_project.set_source("v3")
    wait_until(lambda: fake_project.version() == "v3", what="v3 served after the fix")
    assert daemon.wait_platform("running")["platform"]["last_build"]["error"] is None


def test_crash_restart_with_backoff(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """An unexpected exit is reported with its exit code and restarted."""
    first = _start(daemon, fake_project)
    os.kill(first["platform"]["pid"], signal.SIGKILL)
    exited = daemon.wait_event("platform.exited")[0]
    assert exited["exit_code"] == -signal.SIGKILL
    status = wait_until(
        lambda: (
            (s := daemon.status())["platform"]["restarts"] == 1
            and s["platform"]["state"] == "running"
            and s
        ),
        what="restarted platform",
    )
    assert status["platform"]["pid"] != first["platform"]["pid"]
    assert fake_project.version() == "v1"


def test_crashloop_waits_for_a_change(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """Five exits within a minute is crashloop; a source change gets it running again."""
    fake_project.set_source("v1 CRASH")
    daemon.start()
    daemon.wait_platform("crashloop", timeout=40)
    names = daemon.event_names()
    assert names.count("platform.exited") == 5 and "platform.crashloop" in names
    fake_project.set_source("v2")
    wait_until(lambda: fake_project.version() == "v2", what="v2 served")
    daemon.wait_platform("running")


def test_restart_command_leaves_crashloop(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """`devsup restart platform` is the other way out of crashloop."""
    fake_project.set_source("v1 CRASH")
    daemon.start()
    daemon.wait_platform("crashloop", timeout=40)
    # The artefact is fixed behind devsup's back (no watched change), then restarted by hand.
    (fake_project.root / "bin" / "app.txt").write_text("v9\n")
    result = daemon.cli("restart", "platform")
    assert result.returncode == 0, result.stderr
    assert fake_project.version() == "v9"


LAUNCHER = """
python3 {sleeper} &
setsid python3 {sleeper} &
sh -c 'trap "" TERM; python3 {sleeper} --ignore-term' &
exec python3 {platform}
"""


def test_no_orphans_with_a_forking_launcher(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """Stopping a platform that forks helpers (one in a new session, one ignoring SIGTERM)
    leaves none of them running."""
    launcher = fake_project.root / "launch.sh"
    launcher.write_text(
        LAUNCHER.format(sleeper=FIXTURES / "sleeper.py", platform=FIXTURES / "fakeplatform.py")
    )
    fake_project.run = f"sh {launcher}"
    fake_project.stop_timeout = 1
    fake_project.write_config()
    _start(daemon, fake_project)
    root = daemon.status()["platform"]["pid"]
    tree = wait_until(
        lambda: len(t := psutil.Process(root).children(recursive=True)) >= 4 and t,
        what="launcher's helpers running",
    )
    pids = [root, *(p.pid for p in tree)]
    assert daemon.stop() == 0

    def all_gone() -> bool:
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                pass
        return True

    wait_until(all_gone, timeout=10, what="every process of the tree gone")


def test_sigterm_stops_within_stop_timeout(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """SIGTERM stops the platform, removes the socket and exits 0 within stop_timeout + 2 s."""
    status = _start(daemon, fake_project)
    pid = status["platform"]["pid"]
    assert daemon.proc is not None
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=fake_project.stop_timeout + 2) == 0
    assert time.monotonic() - started < fake_project.stop_timeout + 2
    assert not daemon.socket.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_adopts_after_kill9_never_two_platforms(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """After `kill -9` of the daemon, the next one stops the orphaned platform first."""
    old = _start(daemon, fake_project)["platform"]["pid"]
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait()
    assert psutil.Process(old).is_running()  # the orphan still serves
    second = DaemonProcess(fake_project.config, env=daemon.env, project=fake_project.project)
    try:
        second.start()
        new = second.wait_platform("running")["platform"]["pid"]
        assert new != old
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
        assert "platform.orphan_found" in [e["event"] for e in second.logs_of("devsup")]
        assert fake_project.version() == "v1"
    finally:
        second.stop()


def test_second_daemon_refuses(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """A second `devsup run` for the same project exits 2 with a clear message."""
    _start(daemon, fake_project)
    result = subprocess.run(
        [sys.executable, "-m", "devsupervisor", "run", "--config", str(fake_project.config)],
        check=False,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "already running" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert daemon.status()["platform"]["state"] == "running"


def test_fifty_clients_while_a_build_runs(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """50 clients at once get status answers while a slow build is running."""
    _start(daemon, fake_project)
    (fake_project.root / "build_delay").write_text("3")
    fake_project.set_source("v2")
    daemon.wait_platform("building")
    results: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            results.append(daemon.status()["platform"]["state"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors and len(results) == 50
    assert set(results) <= {"building", "starting", "running"}
    wait_until(lambda: fake_project.version() == "v2", what="v2 after the slow build")


def test_platform_output_in_logs(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """The platform's stdout reaches `devsup logs platform` line by line."""
    _start(daemon, fake_project)
    result = wait_until(
        lambda: "listening" in (r := daemon.cli("logs", "platform", "-n", "10")).stdout and r,
        what="platform output in logs",
    )
    assert "fake platform v1" in result.stdout


# --- shell strings run exactly as `sh -c STRING` (issue 9, defect 4) -----------------------------


def _run(command: str, cwd: Path) -> BuildResult:
    return asyncio.run(run_command(command, cwd=str(cwd)))


def test_exec_in_run_makes_the_platform_the_process(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """`exec CMD` (the harness's run string) is not rewritten: the reported pid is the platform."""
    assert fake_project.run.startswith("exec ")
    pid = _start(daemon, fake_project)["platform"]["pid"]
    assert "fakeplatform.py" in " ".join(psutil.Process(pid).cmdline())


def test_shell_strings_keep_their_meaning(tmp_path: Path) -> None:
    """`! grep -q X f`, `command -v sh` and `exec CMD` mean what they mean to sh."""
    (tmp_path / "f").write_text("hello\n")
    assert _run("! grep -q X f", tmp_path).ok
    assert not _run("! grep -q hello f", tmp_path).ok
    assert _run("command -v sh", tmp_path).ok
    result = _run("exec echo once", tmp_path)
    assert result.ok and result.output == ("once",)


def test_unbalanced_quote_guesses_nothing(tmp_path: Path) -> None:
    """A `run` or `build` that shlex cannot split gives no artefact guess instead of a traceback."""
    config = BinaryConfig(workdir=tmp_path, build="go build -o 'bin/x", run="./bin/x 'oops")
    assert build_outputs(config) == []
    assert BinaryTarget(config, on_output=lambda line: None).artefact_path() is None
    assert run_executable("exec ./bin/platform") == "./bin/platform"
    assert run_executable("A=1 exec ./bin/platform -v") == "./bin/platform"


def test_unbalanced_quote_in_run_is_reported_not_fatal(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """sh's syntax error for `run` is the platform's exit; the daemon keeps answering and stops."""
    fake_project.run = "exec ./bin/platform 'oops"
    fake_project.write_config()
    daemon.start()
    exited = daemon.wait_event("platform.exited")[0]
    assert exited["exit_code"] == 2
    assert daemon.proc is not None
    assert daemon.status()["daemon"]["pid"] == daemon.proc.pid
    assert daemon.stop() == 0, daemon.log_tail()


# --- double-forked helpers come back to devsup (issue 9, defect 9) ------------------------------

DOUBLE_FORK = """
import asyncio, json, os, sys, time
from pathlib import Path
import psutil
from devsupervisor.config.model import BinaryConfig
from devsupervisor.platform.binary import BinaryTarget
from devsupervisor.platform.process import set_child_subreaper

async def main(workdir, run, marker):
    assert set_child_subreaper()
    target = BinaryTarget(
        BinaryConfig(workdir=Path(workdir), build="true", run=run, stop_timeout=2),
        on_output=lambda line: None,
    )
    await target.start()
    deadline = time.monotonic() + 10
    adopted = []
    while not adopted and time.monotonic() < deadline:
        adopted = [p.pid for p in psutil.Process().children() if marker in p.cmdline()]
        await asyncio.sleep(0.02)
    await target.stop()
    print(json.dumps({"adopted": adopted, "platform": target.exit_code}))

asyncio.run(main(*sys.argv[1:]))
"""


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_double_forked_helper_is_stopped_with_the_platform(tmp_path: Path) -> None:
    """`(setsid cmd &)` in `run` is re-parented to devsup (the subreaper) and stopped with it."""
    marker = f"helper-{uuid.uuid4().hex[:8]}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(300)'"
    run = f"(setsid {sleeper} {marker} &); exec {sleeper}"
    try:
        result = subprocess.run(
            [sys.executable, "-c", DOUBLE_FORK, str(tmp_path), run, marker],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(report["adopted"]) == 1  # the helper left the tree and came back to devsup
        assert report["platform"] == -signal.SIGTERM
        assert _marked(marker) == []
    finally:
        for proc in _marked(marker):
            proc.kill()


def test_devsup_stop_stops_a_double_forked_helper(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """Through `devsup run`: the helper comes back to the daemon and `devsup stop` ends it."""
    marker = f"helper-{uuid.uuid4().hex[:8]}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(300)'"
    fake_project.run = f"(setsid {sleeper} {marker} &); {fake_project.run}"
    fake_project.write_config()
    try:
        _start(daemon, fake_project)
        assert daemon.proc is not None
        helper = wait_until(lambda: _marked(marker), what="the helper running")[0]
        assert helper.ppid() == daemon.proc.pid  # re-parented to the subreaper, not to init
        assert daemon.cli("stop").returncode == 0
        assert daemon.proc.wait(timeout=20) == 0
        assert _marked(marker) == []
    finally:
        for proc in _marked(marker):
            proc.kill()


def test_live_edit_to_an_unbalanced_quote_stops_the_old_platform(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """A live config edit whose `run` sh rejects: the old platform is stopped (never left
    untracked), the new one's exit is reported, the daemon keeps answering."""
    old = _start(daemon, fake_project)["platform"]["pid"]
    fake_project.run = f"{fake_project.run} 'oops"
    fake_project.write_config()
    daemon.wait_event("config.reloaded")
    exited = wait_until(
        lambda: [e for e in daemon.events() if e["event"] == "platform.exited"],
        what="the new platform's exit",
    )[0]
    assert exited["exit_code"] == 2
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert daemon.status()["config_error"] is None
    assert daemon.stop() == 0, daemon.log_tail()


ORPHAN_ENDS = """
import asyncio, json, os, sys, time
from pathlib import Path
import psutil
from devsupervisor.config.model import BinaryConfig
from devsupervisor.platform.binary import BinaryTarget
from devsupervisor.platform.process import ORPHAN_REAPER, set_child_subreaper

async def main(workdir, run, marker):
    assert set_child_subreaper()
    target = BinaryTarget(
        BinaryConfig(workdir=Path(workdir), build="true", run=run, stop_timeout=2),
        on_output=lambda line: None,
    )
    await target.start()
    deadline = time.monotonic() + 10
    helpers = []
    while len(helpers) < 2 and time.monotonic() < deadline:
        helpers = [p.pid for p in psutil.Process().children() if marker in p.cmdline()]
        await asyncio.sleep(0.01)
    ORPHAN_REAPER.scan()  # sees them alive: adopted
    os.kill(helpers[0], 9)
    os.kill(helpers[1], 9)
    while any(os.path.exists(f"/proc/{pid}") for pid in helpers):
        assert time.monotonic() < deadline, "helpers left as zombies"
        ORPHAN_REAPER.scan()
        await asyncio.sleep(0.01)
    alive = target.is_running()
    await target.stop()
    print(json.dumps({"helpers": helpers, "platform_alive": alive, "exit": target.exit_code}))

asyncio.run(main(*sys.argv[1:]))
"""


def test_orphans_that_end_are_reaped_not_left_as_zombies(tmp_path: Path) -> None:
    """Helpers re-parented to devsup (one that left the session, one that did not) that end
    while the platform runs are reaped; the platform itself is left to its own waiter."""
    marker = f"helper-{uuid.uuid4().hex[:8]}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(300)'"
    run = f"(setsid {sleeper} {marker} &); ({sleeper} {marker} &); exec {sleeper}"
    try:
        result = subprocess.run(
            [sys.executable, "-c", ORPHAN_ENDS, str(tmp_path), run, marker],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(report["helpers"]) == 2 and report["platform_alive"]
        assert report["exit"] == -signal.SIGTERM  # its exit status was not taken by the reaper
    finally:
        for proc in _marked(marker):
            proc.kill()
