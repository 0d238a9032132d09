"""A failing build that floods its output (1,500 lines, then 50 MB without a newline): the
daemon's memory, log records, events and status stay bounded."""

from __future__ import annotations

import json
from pathlib import Path

from devsupervisor.logs.bounds import RECORD_MAX_BYTES
from devsupervisor.logs.pipeline import LOG_MAX_BYTES
from tests.harness import DaemonProcess, FakeProject

FLOOD_BYTES = 50_000_000
# What the daemon may reach at its peak while reading the flood (it peaks at ~45 MiB here);
# before the bounds, a 300 MB flood took it to 850 MB.
PEAK_RSS_LIMIT_KB = 120 * 1024


def vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_flooding_build_keeps_events_status_and_log_bounded(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """Lifecycle events survive the flood in `events`, status stays under 64 KiB, every log
    record under the record cap and every log file under the rotation cap."""
    fake_project.build = (
        "if grep -q FLOOD src/app.txt; then seq 1500;"
        f" head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x; exit 1; fi; {fake_project.build}"
    )
    fake_project.write_config()
    daemon.start()
    daemon.wait_platform("running")
    fake_project.set_source("FLOOD")
    status = daemon.wait_platform("build_failed", timeout=120)

    assert daemon.proc is not None
    peak = vm_hwm_kb(daemon.proc.pid)
    print(f"daemon VmHWM after a {FLOOD_BYTES / 1e6:.0f} MB flood: {peak / 1024:.0f} MiB")
    assert peak < PEAK_RSS_LIMIT_KB

    assert len(json.dumps(status)) < 64 * 1024
    error = status["platform"]["last_build"]["error"]
    assert "line cut at" in error

    names = daemon.event_names()
    for name in ("daemon.started", "build.started", "build.succeeded", "platform.ready"):
        assert name in names
    assert "build.failed" in names
    assert not [n for n in names if n.endswith(".output")]
    with daemon.client() as client:
        assert len(json.dumps(client.call("events"))) < 2 * 1024 * 1024

    devsup_lines = daemon.logs_of("devsup", 2000)
    assert any(r.get("event") == "build.output" and r.get("line") == "1500" for r in devsup_lines)

    log_file = Path(status["daemon"]["log_file"])
    files = [log_file, *log_file.parent.glob(log_file.name + ".*")]
    for path in files:
        assert path.stat().st_size <= LOG_MAX_BYTES
        for raw in path.read_bytes().splitlines():
            assert len(raw) <= RECORD_MAX_BYTES
