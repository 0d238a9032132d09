"""Playwright driving Debian's chromium, for the dashboard's browser tests.

`playwright install` cannot download a browser here, so the tests launch the system's
/usr/bin/chromium (installed by scripts/prereqs) headless, with a fresh profile per module.
Missing chromium fails the test with the reason; nothing here skips.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from devsupervisor.dashboard.token_file import login_url, read_token, token_path
from tests.harness import DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
# Headless in a container as root: no sandbox, no GPU, nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A laptop screen.
VIEWPORT = {"width": 1366, "height": 900}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """A headless chromium with a fresh profile, shared by one test module."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/prereqs (apt-get install chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        try:
            yield context
        finally:
            context.close()


def dashboard_login(daemon: DaemonProcess) -> str:
    """The login URL `devsup ui` would print for `daemon`."""
    url = daemon.status()["dashboard"]["url"]
    state = Path(daemon.env["XDG_STATE_HOME"]) / "devsup" / f"{daemon.project}.json"
    return login_url(url, read_token(token_path(state)))


class DashboardPage:
    """One open dashboard tab, with the reads the tests make."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: self.errors.append(msg.text) if msg.type == "error" else None,
        )

    @classmethod
    def open(cls, context: BrowserContext, login: str) -> DashboardPage:
        tab = cls(context.new_page())
        tab.page.goto(login)
        tab.page.wait_for_selector("#platform-state:not(:text('…'))")
        return tab

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def wait_text(
        self, selector: str, check: Callable[[str], Any], timeout: float = 30, what: str = ""
    ) -> str:
        """Wait until `check(inner text of selector)` holds; return that text."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = self.page.locator(selector).inner_text()
            if check(last):
                return last
            self.page.wait_for_timeout(50)
        raise AssertionError(f"{what or selector}: still {last!r} after {timeout}s")

    def bars(self) -> int:
        return self.page.locator("#chart g.bar").count()

    def close(self) -> None:
        self.page.close()
