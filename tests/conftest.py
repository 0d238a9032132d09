"""Shared fixtures: throwaway projects and daemons that always clean up; the host guard."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import host_guard
from tests.docker_env import compose_project, demo_images, docker_engine  # noqa: F401
from tests.harness import DaemonProcess, FakeProject
from tests.stack_env import demo_stack  # noqa: F401


@pytest.fixture
def project_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake_project(tmp_path: Path, project_name: str) -> FakeProject:
    return FakeProject(tmp_path / "proj", project=project_name)


@pytest.fixture
def daemon(fake_project: FakeProject) -> Iterator[DaemonProcess]:
    """A daemon on `fake_project`, not yet started; stopped (and its platform killed) after."""
    d = DaemonProcess(fake_project.config, project=fake_project.project)
    try:
        yield d
    finally:
        d.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran a daemon shows what the daemon logged: a flake seen once in a long
    run can then be understood from its report alone."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    daemon = getattr(item, "funcargs", {}).get("daemon")
    if report.failed and isinstance(daemon, DaemonProcess):
        report.sections.append((f"devsup output ({report.when})", daemon.log_tail(20_000)))


# --- the host as the suite found it (tests/host_guard.py) ---------------------------------------

_HOST_BEFORE = pytest.StashKey[host_guard.Snapshot]()
_HOST_CHANGES = pytest.StashKey[list[str]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if host_guard.enabled() and not hasattr(session.config, "workerinput"):
        session.config.stash[_HOST_BEFORE] = host_guard.take()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when the host's interfaces, namespaces or engine objects changed."""
    before = session.config.stash.get(_HOST_BEFORE, None)
    if before is None:
        return
    changes = host_guard.differences(before, host_guard.take())
    session.config.stash[_HOST_CHANGES] = changes
    if changes and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    changes = terminalreporter.config.stash.get(_HOST_CHANGES, [])
    if changes:
        terminalreporter.section("host changed by the test run", red=True, bold=True)
        for line in changes:
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            f"(tests must leave the host as they found it; {host_guard.ENV_SWITCH}=0 switches this"
            " check off when another suite shares the engine)"
        )
