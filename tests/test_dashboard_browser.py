"""The dashboard in a real browser on a real daemon (fake platform, no Docker): actions, live
updates, title, chart, log filter, and the login rules as a browser sees them."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import BrowserContext

from tests.browser_env import DashboardPage, browser, dashboard_login  # noqa: F401
from tests.harness import DaemonProcess, FakeProject, wait_until


def started(daemon: DaemonProcess) -> DaemonProcess:
    daemon.start()
    daemon.wait_platform("running")
    return daemon


def test_rebuild_from_the_page_shows_the_new_pid(
    browser: BrowserContext,  # noqa: F811
    daemon: DaemonProcess,
) -> None:
    """Clicking Rebuild restarts the platform and the page shows the new pid."""
    old_pid = started(daemon).status()["platform"]["pid"]
    tab = DashboardPage.open(browser, dashboard_login(daemon))
    assert tab.text("#platform-pid") == str(old_pid)
    assert tab.text("#stack") == "skeleton"
    assert tab.page.title().startswith("running · skeleton")
    tab.page.click("#rebuild")
    new_pid = int(tab.wait_text("#platform-pid", lambda t: t.isdigit() and t != str(old_pid)))
    assert new_pid == daemon.status()["platform"]["pid"]
    tab.wait_text("#message", lambda t: t == f"rebuild: done (pid {new_pid})")
    assert tab.errors == []


def test_failed_build_in_title_and_error_then_chart_grows_on_fix(
    browser: BrowserContext,  # noqa: F811
    daemon: DaemonProcess,
    fake_project: FakeProject,
) -> None:
    """A broken save puts `build failed` in the title and the error on the page; each good
    save adds a bar to the reload chart."""
    started(daemon)
    tab = DashboardPage.open(browser, dashboard_login(daemon))
    bars = tab.bars()
    fake_project.set_source("v2 BROKEN")
    wait_until(lambda: tab.page.title().startswith("build failed"), what="title build failed")
    tab.wait_text("#build-error", lambda t: "syntax error: unexpected BROKEN" in t)
    tab.wait_text("#platform-state", lambda t: t == "build failed")
    # The tab's icon turns red with the title.
    assert "%23c62828" in (tab.page.get_attribute("#favicon", "href") or "")
    fake_project.set_source("v3")
    tab.wait_text("#platform-state", lambda t: t == "running")
    wait_until(lambda: tab.page.locator("#build-error").is_hidden(), what="the error gone")
    assert tab.page.title().startswith("running")
    wait_until(lambda: tab.bars() == bars + 1, what="a bar for the fixing reload")
    fake_project.set_source("v4")
    wait_until(lambda: tab.bars() == bars + 2, what="a bar for the next reload")
    tab.wait_text("#platform-reload", lambda t: t.startswith("detect ") and " = " in t)
    assert tab.errors == []


def test_log_filter_and_sources(
    browser: BrowserContext,  # noqa: F811
    daemon: DaemonProcess,
) -> None:
    """The log view follows a source live and the filter hides lines that do not match."""
    pid = started(daemon).status()["platform"]["pid"]
    tab = DashboardPage.open(browser, dashboard_login(daemon))
    tab.wait_text("#log-lines", lambda t: f"fake platform v1 pid {pid}" in t)
    tab.page.select_option("#log-source", "devsup")
    tab.wait_text("#log-lines", lambda t: "daemon.started" in t)
    tab.page.fill("#log-filter", "build.succeeded")
    visible = tab.page.locator("#log-lines .line:not(.hidden)")
    wait_until(lambda: visible.count() >= 1, what="a matching line")
    assert all("build.succeeded" in line for line in visible.all_inner_texts())
    assert re.fullmatch(r"\d+ of \d+ lines", tab.text("#log-count"))
    # Keyboard: Escape leaves the filter, `p` pauses, `p` again resumes.
    tab.page.press("#log-filter", "Escape")
    tab.page.keyboard.press("p")
    wait_until(lambda: daemon.status()["watcher"]["paused"], what="paused from the keyboard")
    tab.wait_text("#pause", lambda t: t == "Resume")
    tab.wait_text("#message", lambda t: t == "pause: done")
    tab.page.keyboard.press("p")
    wait_until(lambda: not daemon.status()["watcher"]["paused"], what="resumed")
    assert tab.errors == []


def test_login_cookie_is_httponly_and_the_token_leaves_the_url(
    browser: BrowserContext,  # noqa: F811
    daemon: DaemonProcess,
) -> None:
    """After login the address bar has no token and scripts cannot read the cookie; without
    the cookie the page is 401."""
    started(daemon)
    login = dashboard_login(daemon)
    tab = DashboardPage.open(browser, login)
    assert "token" not in tab.page.url
    assert tab.page.evaluate("document.cookie") == ""
    cookie = next(c for c in browser.cookies() if c["name"].startswith("devsup_token_"))
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    fresh = browser.new_page()
    fresh.context.clear_cookies()
    assert fresh.goto(login.split("?")[0]).status == 401  # type: ignore[union-attr]
    fresh.close()


def test_devsup_ui_prints_the_login_url(daemon: DaemonProcess) -> None:
    """`devsup ui` prints the URL with the token (and opens nothing without a display)."""
    started(daemon)
    env = {
        k: v for k, v in daemon.env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    }
    result = subprocess.run(
        [sys.executable, "-m", "devsupervisor", "ui", "--project", daemon.project],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == dashboard_login(daemon)
    token_file = Path(daemon.env["XDG_STATE_HOME"]) / "devsup" / f"{daemon.project}.dashboard-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
