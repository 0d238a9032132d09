"""The dashboard in a real browser on the demo stack (real Docker, real Go builds): services with
their published ports, the start timeline, rebuild, a broken and fixed build, the reload chart,
log filtering and a stack switch from the page. Screenshots go to a temp dir, or to
$DEVSUP_SCREENSHOTS (`DEVSUP_SCREENSHOTS=docs` refreshes the README's).

Run under the shared lock:
`flock /tmp/devsup-test.lock .venv/bin/pytest tests/test_dashboard_demo.py`.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import BrowserContext

from tests.browser_env import DashboardPage, browser, dashboard_login  # noqa: F401
from tests.harness import wait_until
from tests.stack_env import DemoStack

pytestmark = pytest.mark.docker

# Records, in the page, when the chart gains a bar (page time, ms since the epoch).
WATCH_BARS = """() => {
  window.__bars = [];
  const chart = document.getElementById("chart");
  new MutationObserver(() => {
    const n = chart.querySelectorAll("g.bar").length;
    const last = window.__bars[window.__bars.length - 1];
    if (!last || last.n !== n) window.__bars.push({n, t: Date.now()});
  }).observe(chart, {childList: true});
}"""


def compose_followers(pid: int) -> list[psutil.Process]:
    """`docker compose logs -f` processes the daemon runs."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            argv = child.cmdline()
            if "logs" in argv and ("-f" in argv or "--follow" in argv):
                found.append(child)
    return found


def seconds(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def save_break(stack: DemoStack) -> str:
    """A save with a compile error, like a typo in an editor; returns the text before it."""
    main = stack.sources / "cmd" / "main.go"
    text = main.read_text()
    tmp = main.with_name(".main.go.swp")
    tmp.write_text(text + "\nvar _ = undefinedName\n")
    tmp.replace(main)
    return text


def save_text(stack: DemoStack, text: str) -> None:
    main = stack.sources / "cmd" / "main.go"
    tmp = main.with_name(".main.go.swp")
    tmp.write_text(text)
    tmp.replace(main)


# Two stacks coming up and a handful of Go builds on a loaded 2-core machine.
@pytest.mark.timeout(400)
def test_dashboard_on_the_demo_stack(
    browser: BrowserContext,  # noqa: F811
    demo_stack: DemoStack,
    tmp_path: Path,
) -> None:
    """Everything the page promises, on the demo stack, from load to a switch."""
    shots = Path(os.environ.get("DEVSUP_SCREENSHOTS") or tmp_path)
    daemon = demo_stack.daemon.start()
    daemon.wait_platform("running", timeout=120)
    tab = DashboardPage.open(browser, dashboard_login(daemon))
    page = tab.page

    # Services with their published ports as links; the start timeline.
    postgres = page.locator("#services tr[data-service=postgres]")
    postgres.wait_for()
    port = demo_stack.env["DEMO_POSTGRES_PORT"]
    wait_until(lambda: postgres.locator(f"a[href='http://127.0.0.1:{port}/']").count() == 1)
    tab.wait_text("#timeline-summary", lambda t: "start skeleton" in t and "done in" in t)
    assert page.locator("#timeline rect").count() >= 3

    # Rebuild from the page: a new pid.
    old_pid = daemon.status()["platform"]["pid"]
    page.click("#rebuild")
    new_pid = tab.wait_text("#platform-pid", lambda t: t.isdigit() and t != str(old_pid), 90)
    assert int(new_pid) == daemon.status()["platform"]["pid"]

    # A broken save: the title and the compiler's error; then fixed.
    page.evaluate(WATCH_BARS)
    bars = tab.bars()
    good = save_break(demo_stack)
    wait_until(lambda: page.title().startswith("build failed"), 90, "title build failed")
    tab.wait_text("#build-error", lambda t: "undefinedName" in t)
    page.screenshot(path=str(shots / "dashboard-build-failed.png"))
    save_text(demo_stack, good.replace('const version = "v1"', 'const version = "v2"'))
    wait_until(lambda: tab.bars() == bars + 1, 90, "a chart bar for the fixing reload")
    tab.wait_text("#platform-state", lambda t: t == "running")
    assert demo_stack.version() == "v2"

    # More saves, more bars; how long after `platform.ready` the page shows each reload.
    for i, version in enumerate(("v3", "v4")):
        demo_stack.edit_version(version)
        wait_until(lambda n=bars + 2 + i: tab.bars() == n, 90, f"a chart bar for {version}")
    assert demo_stack.version() == "v4"
    shown = {entry["n"]: entry["t"] / 1000 for entry in page.evaluate("window.__bars")}
    readies = [e for e in daemon.events() if e["event"] == "platform.ready"][-3:]
    lags = [round(shown[bars + 1 + i] - seconds(e["ts"]), 3) for i, e in enumerate(readies)]
    print(f"dashboard lag after platform.ready (s): {lags}")
    assert all(0 <= lag < 2 for lag in lags), lags

    # Logs: the devsup stream, filtered.
    page.select_option("#log-source", "devsup")
    tab.wait_text("#log-lines", lambda t: "platform.reloaded" in t)
    page.fill("#log-filter", "platform.reloaded")
    visible = page.locator("#log-lines .line:not(.hidden)")
    wait_until(lambda: visible.count() >= 3, what="the three reloads in the filtered log")
    assert all("platform.reloaded" in line for line in visible.all_inner_texts())
    page.fill("#log-filter", "")
    page.select_option("#log-source", "postgres")  # a compose service's log, through compose
    tab.wait_text("#log-lines", lambda t: "role=postgres event=listening" in t)
    assert daemon.proc is not None
    daemon_pid = daemon.proc.pid
    assert compose_followers(daemon_pid)
    page.select_option("#log-source", "platform")
    tab.wait_text("#log-lines", lambda t: "platform v4 listening" in t)
    # The page left the postgres log: its `docker compose logs -f` is gone.
    wait_until(lambda: not compose_followers(daemon_pid), 10, "no compose logs -f left")
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    # Switch from the page: the whole stack, the platform as a container.
    page.select_option("#stack-select", "fullstack")
    page.click("#switch")
    tab.wait_text("#message", lambda t: t == "switch: done", 240)
    status = daemon.status()
    assert (status["stack"], status["state"]) == ("fullstack", "running")
    tab.wait_text("#stack", lambda t: t == "fullstack")
    tab.wait_text("#platform-mode", lambda t: t == "container")
    tab.wait_text("#timeline-summary", lambda t: "switch fullstack" in t and "done in" in t)
    page.locator("#services tr[data-service=traefik]").wait_for()
    assert page.title().startswith("running · fullstack")
    page.screenshot(path=str(shots / "dashboard-fullstack.png"), full_page=True)
    assert tab.errors == []
