"""The dashboard as part of a real daemon (no browser): config key, token file life, failures."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

from tests.harness import DaemonProcess, FakeProject, free_port, http_get, wait_until


def token_file(daemon: DaemonProcess) -> Path:
    return Path(daemon.env["XDG_STATE_HOME"]) / "devsup" / f"{daemon.project}.dashboard-token"


def test_fixed_port_url_in_status_and_log_token_file_lives_with_the_daemon(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """`dashboard: {port: N}` serves on N; the URL is in status and `daemon.started`; the 0600
    token file exists while the daemon runs and is gone after it stops."""
    port = free_port()
    fake_project.write_config(dashboard={"port": port})
    daemon.start().wait_platform("running")
    url = f"http://127.0.0.1:{port}/"
    assert daemon.status()["dashboard"] == {"url": url}
    started = next(e for e in daemon.events() if e["event"] == "daemon.started")
    assert started["dashboard"] == url
    assert stat.S_IMODE(token_file(daemon).stat().st_mode) == 0o600
    assert http_get(url + "api/status") is None  # 401 without the token
    assert daemon.stop() == 0
    assert not token_file(daemon).exists()


def test_dashboard_false_turns_it_off(daemon: DaemonProcess, fake_project: FakeProject) -> None:
    """`dashboard: false`: no server, no token file, status.dashboard null, `devsup ui` says why."""
    fake_project.write_config(dashboard=False)
    daemon.start().wait_platform("running")
    assert daemon.status()["dashboard"] is None
    assert not token_file(daemon).exists()
    result = daemon.cli("ui", "--no-browser")
    assert result.returncode == 1
    assert "dashboard is off" in result.stderr


def test_port_in_use_leaves_the_supervisor_running(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """A dashboard that cannot bind is reported and left off; the supervisor runs on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        fake_project.write_config(dashboard={"port": holder.getsockname()[1]})
        daemon.start().wait_platform("running")
        assert daemon.status()["dashboard"] is None
        failed = wait_until(
            lambda: [r for r in daemon.logs_of("devsup") if r.get("event") == "dashboard.failed"],
            what="dashboard.failed logged",
        )
        assert "in use" in json.dumps(failed[0])


def test_http_server_loads_on_the_first_visit(
    daemon: DaemonProcess, fake_project: FakeProject
) -> None:
    """The port is bound at start but aiohttp is loaded only when the page is first opened (a
    daemon nobody visits never pays its memory); that first request waits and is answered."""
    daemon.start().wait_platform("running")
    url = daemon.status()["dashboard"]["url"]
    maps = Path(f"/proc/{daemon.proc.pid}/maps")
    assert "aiohttp" not in maps.read_text()
    token = token_file(daemon).read_text().strip()
    body = http_get(f"{url}api/status?token={token}", timeout=10)
    assert body is not None and json.loads(body)["project"] == daemon.project
    assert "aiohttp" in maps.read_text()
