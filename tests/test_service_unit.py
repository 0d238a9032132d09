"""The systemd user unit: verified by systemd-analyze, installed into and removed from a temp HOME.

A fake `run` stands in for systemctl only where a user manager must answer, which cannot happen
on a machine without systemd as PID 1. Wherever no manager answering is the point, the real
systemctl runs with an environment that reaches no bus (HOME, PATH only), so these tests never
touch the developer's own user manager.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devsupervisor.errors import ConfigNotFound, UsageError
from devsupervisor.systemd.unit import (
    MARKER,
    SHIPPED_EXEC,
    UNIT_NAME,
    devsup_command,
    install,
    render_unit,
    status,
    uninstall,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED_UNIT = REPO / "systemd" / "devsup.service"


class FakeSystemctl:
    """Answers like a running user manager would; records every argv and the unit's presence."""

    def __init__(self, unit_path: Path | None = None, *, active: str = "active") -> None:
        self.calls: list[list[str]] = []
        self.unit_present_at: list[tuple[str, bool]] = []
        self.unit_path = unit_path
        self.active = active

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs["env"]["HOME"], "systemctl must be told which HOME to look in"
        self.calls.append(list(argv))
        if self.unit_path is not None:
            self.unit_present_at.append((argv[2], self.unit_path.exists()))
        out = {"is-active": self.active, "is-enabled": "enabled"}.get(argv[2], "")
        return subprocess.CompletedProcess(list(argv), 0, stdout=out + "\n", stderr="")

    def actions(self) -> list[list[str]]:
        """The calls other than the manager probe."""
        return [c[2:] for c in self.calls if c[2] != "show-environment"]


def analyze_verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze --user verify`: a private XDG_RUNTIME_DIR lets it run without a manager."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # A space and a % exercise the unit's quoting and specifier escaping.
    d = tmp_path / "my project %i"
    d.mkdir()
    c = d / "devsup.yaml"
    c.write_text("project: demo\n")
    return c


def offline_env(home: Path) -> dict[str, str]:
    """An environment in which no user manager can answer: no XDG_RUNTIME_DIR, no bus address."""
    return {"HOME": str(home), "PATH": os.environ["PATH"]}


def unit_in(home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / UNIT_NAME


def test_shipped_unit_is_the_template() -> None:
    """systemd/devsup.service is what render_unit produces for the PATH-lookup command."""
    assert SHIPPED_UNIT.read_text() == render_unit(SHIPPED_EXEC)


def test_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The shipped unit verifies as a user unit with no errors and no warnings."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is required (apt-get install systemd)"
    done = analyze_verify(SHIPPED_UNIT, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "WatchdogSec=30"):
        assert line in SHIPPED_UNIT.read_text().splitlines()


def test_installed_unit_passes_systemd_analyze_verify(
    tmp_path: Path, home: Path, config: Path
) -> None:
    """The unit install writes, with real paths containing spaces and %, verifies cleanly."""
    bindir = tmp_path / "bin dir"
    bindir.mkdir()
    devsup = bindir / "devsup"
    devsup.write_text("#!/bin/sh\nexit 0\n")
    devsup.chmod(devsup.stat().st_mode | stat.S_IXUSR)
    for path in (str(devsup), None):  # an explicit devsup, then whatever this machine resolves
        result = install(
            config,
            home=home,
            environ=offline_env(home),
            devsup_path=path,
            run=FakeSystemctl(),
        )
        done = analyze_verify(result.unit_path, tmp_path)
        assert (done.returncode, done.stderr) == (0, "")


def test_install_without_manager_enables_offline_and_returns_commands(
    home: Path, config: Path
) -> None:
    """Real systemctl, no user manager: the unit is enabled for next login, start is left to do."""
    result = install(config, home=home, environ=offline_env(home), devsup_path="/usr/bin/true")
    assert not result.manager
    assert result.changed and result.enabled and result.ok
    assert result.todo == (
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "start", UNIT_NAME),
    )
    wants = home / ".config/systemd/user/default.target.wants" / UNIT_NAME
    assert wants.resolve() == result.unit_path.resolve()
    text = result.unit_path.read_text()
    assert text.startswith(MARKER + "\n")
    assert result.exec_start == ("/usr/bin/true", "run", "--config", str(config))

    removed = uninstall(home=home, environ=offline_env(home))
    assert removed.removed and removed.ok
    assert not result.unit_path.exists()
    assert not wants.is_symlink()


def test_install_without_systemctl_returns_enable_now(home: Path, config: Path) -> None:
    """With no systemctl at all, install writes the unit and returns daemon-reload, enable --now."""
    env = {"HOME": str(home), "PATH": str(home / "no-bin")}
    result = install(config, home=home, environ=env, devsup_path="/usr/bin/true")
    assert not result.manager and not result.enabled
    assert result.todo == (
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", UNIT_NAME),
    )
    assert result.unit_path.is_file()


def test_install_with_manager_reloads_enables_and_starts(home: Path, config: Path) -> None:
    """With a user manager: daemon-reload, enable, then restart without blocking on READY."""
    fake = FakeSystemctl()
    env = {**offline_env(home), "PATH": "/opt/go/bin:/usr/bin", "DOCKER_HOST": "unix:///d.sock"}
    result = install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=fake)
    assert result.manager and result.enabled and result.ok and result.todo == ()
    assert fake.actions() == [
        ["daemon-reload"],
        ["enable", UNIT_NAME],
        ["restart", "--no-block", UNIT_NAME],
    ]
    lines = result.unit_path.read_text().splitlines()
    assert 'Environment="PATH=/opt/go/bin:/usr/bin"' in lines
    assert 'Environment="DOCKER_HOST=unix:///d.sock"' in lines
    assert f'ExecStart=/usr/bin/true run --config "{str(config).replace("%", "%%")}"' in lines


def test_reinstall_same_content_reports_no_change(home: Path, config: Path) -> None:
    """Installing twice with the same inputs changes nothing and only ensures it is started."""
    env = offline_env(home)
    install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    before = unit_in(home).stat().st_mtime_ns
    fake = FakeSystemctl()
    again = install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=fake)
    assert not again.changed
    assert unit_in(home).stat().st_mtime_ns == before
    assert fake.actions()[-1] == ["start", "--no-block", UNIT_NAME]


def test_reinstall_with_other_config_rewrites_and_restarts(
    home: Path, config: Path, tmp_path: Path
) -> None:
    """A different config path rewrites the unit and restarts the running daemon."""
    env = offline_env(home)
    install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    other = tmp_path / "other.yaml"
    other.write_text("project: other\n")
    fake = FakeSystemctl()
    again = install(other, home=home, environ=env, devsup_path="/usr/bin/true", run=fake)
    assert again.changed
    assert str(other) in unit_in(home).read_text()
    assert fake.actions()[-1] == ["restart", "--no-block", UNIT_NAME]


def test_install_respects_xdg_config_home(tmp_path: Path, home: Path, config: Path) -> None:
    """An absolute XDG_CONFIG_HOME is where the unit goes."""
    xdg = tmp_path / "xdg"
    env = {**offline_env(home), "XDG_CONFIG_HOME": str(xdg)}
    result = install(config, home=home, environ=env, devsup_path="/usr/bin/true")
    assert result.unit_path == xdg / "systemd" / "user" / UNIT_NAME
    assert result.unit_path.is_file() and not unit_in(home).exists()
    uninstall(home=home, environ=env)
    assert not result.unit_path.exists()


def test_install_missing_config_is_an_error(home: Path, tmp_path: Path) -> None:
    """A config path that does not exist is refused before anything is written."""
    with pytest.raises(ConfigNotFound, match="no such config file"):
        install(tmp_path / "nope.yaml", home=home, environ=offline_env(home), run=FakeSystemctl())
    assert not unit_in(home).exists()


def test_install_refuses_to_overwrite_a_foreign_unit(home: Path, config: Path) -> None:
    """A devsup.service someone else wrote is kept unless --force."""
    unit = unit_in(home)
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/mine\n")
    env = offline_env(home)
    with pytest.raises(UsageError, match="not written by devsup"):
        install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    assert unit.read_text() == "[Service]\nExecStart=/usr/bin/mine\n"
    result = install(
        config, home=home, environ=env, devsup_path="/usr/bin/true", force=True, run=FakeSystemctl()
    )
    assert result.changed and unit.read_text().startswith(MARKER)


def test_uninstall_leaves_a_foreign_unit_alone(home: Path) -> None:
    """Uninstall refuses a unit without the install marker and runs no systemctl action."""
    unit = unit_in(home)
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/mine\n")
    fake = FakeSystemctl()
    with pytest.raises(UsageError, match="leaving it alone"):
        uninstall(home=home, environ=offline_env(home), run=fake)
    assert unit.read_text() == "[Service]\nExecStart=/usr/bin/mine\n"
    assert fake.actions() == []


def test_uninstall_with_manager_stops_before_removing(home: Path, config: Path) -> None:
    """With a manager: disable --now while the unit file still exists, then remove, then reload."""
    env = offline_env(home)
    install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    fake = FakeSystemctl(unit_in(home))
    result = uninstall(home=home, environ=env, run=fake)
    assert result.removed and result.manager
    assert fake.actions() == [["disable", "--now", UNIT_NAME], ["daemon-reload"]]
    assert ("disable", True) in fake.unit_present_at
    assert ("daemon-reload", False) in fake.unit_present_at


def test_uninstall_when_nothing_is_installed(home: Path) -> None:
    """Uninstalling with no unit present is a no-op reported as such."""
    fake = FakeSystemctl()
    result = uninstall(home=home, environ=offline_env(home), run=fake)
    assert not result.removed and fake.actions() == []


def test_status_reports_installed_enabled_active(home: Path, config: Path) -> None:
    """Status shows not-installed, then installed by us, enabled and active with a manager."""
    env = offline_env(home)
    before = status(home=home, environ=env, run=FakeSystemctl())
    assert not before.installed and before.active is None
    install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    after = status(home=home, environ=env, run=FakeSystemctl(active="activating"))
    assert after.installed and after.ours and after.manager
    assert (after.enabled, after.active) == ("enabled", "activating")
    assert after.exec_start is not None and after.exec_start.startswith("/usr/bin/true run")


def test_status_without_manager_uses_real_systemctl(home: Path, config: Path) -> None:
    """Real systemctl, no manager: enabled state is still known, active is not asked."""
    env = offline_env(home)
    install(config, home=home, environ=env, devsup_path="/usr/bin/true")
    result = status(home=home, environ=env)
    assert result.installed and result.ours and not result.manager
    assert (result.enabled, result.active) == ("enabled", None)
    uninstall(home=home, environ=env)


def test_devsup_command_prefers_given_path_then_falls_back_to_python() -> None:
    """An explicit path is made absolute; otherwise some runnable absolute command is chosen."""
    assert devsup_command("bin/devsup") == (os.path.abspath("bin/devsup"),)
    resolved = devsup_command()
    assert os.path.isabs(resolved[0]) and os.access(resolved[0], os.X_OK)


# --- one unit per instance (PRODUCT.md, "Instances") --------------------------------------------


def test_each_instance_gets_its_own_unit_and_uninstall_leaves_the_others(
    home: Path, config: Path, tmp_path: Path
) -> None:
    """devsup-<instance>.service per instance, running --instance; removing one keeps the other."""
    env = offline_env(home)
    other = tmp_path / "other.yaml"
    other.write_text("project: demo\n")
    first = install(config, home=home, environ=env, devsup_path="/usr/bin/true", instance="demo")
    second = install(
        other, home=home, environ=env, devsup_path="/usr/bin/true", instance="demo-review"
    )
    assert first.unit_path.name == "devsup-demo.service"
    assert second.unit_path.name == "devsup-demo-review.service"
    assert second.exec_start[-2:] == ("--instance", "demo-review")
    assert first.unit_path.read_text() != second.unit_path.read_text()
    assert analyze_verify(second.unit_path, tmp_path).returncode == 0
    fake = FakeSystemctl()
    removed = uninstall(home=home, environ=env, run=fake, instance="demo-review")
    assert removed.removed and not second.unit_path.exists()
    assert first.unit_path.exists()
    assert ["disable", "--now", "devsup-demo-review.service"] in fake.actions()
    assert status(home=home, environ=env, run=FakeSystemctl(), instance="demo").installed


def test_install_retires_the_pre_instance_unit_of_the_same_config(
    home: Path, config: Path, tmp_path: Path
) -> None:
    """A devsup.service of ours running this config is stopped and removed; one running another
    config, or not written by devsup, is left alone."""
    env = offline_env(home)
    install(config, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    legacy = unit_in(home)
    fake = FakeSystemctl()
    result = install(
        config, home=home, environ=env, devsup_path="/usr/bin/true", run=fake, instance="demo"
    )
    assert result.retired == legacy and not legacy.exists()
    assert fake.actions()[0] == ["disable", "--now", UNIT_NAME]
    other = tmp_path / "elsewhere.yaml"
    other.write_text("project: demo\n")
    install(other, home=home, environ=env, devsup_path="/usr/bin/true", run=FakeSystemctl())
    kept = install(
        config,
        home=home,
        environ=env,
        devsup_path="/usr/bin/true",
        run=FakeSystemctl(),
        instance="demo",
    )
    assert kept.retired is None and legacy.exists()


def test_cli_service_names_the_unit_after_the_worktree_instance(home: Path, tmp_path: Path) -> None:
    """`devsup service install` in a linked worktree installs devsup-<project>-<slug>.service."""
    main = tmp_path / "main"
    (main / ".git" / "worktrees" / "wt").mkdir(parents=True)
    tree = tmp_path / "Review_2"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {main}/.git/worktrees/wt\n")
    (tree / "devsup.yaml").write_text("project: demo\n")
    env = {**offline_env(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "devsupervisor", "service", "install"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (home / ".config/systemd/user/devsup-demo-review-2.service").is_file(), done.stderr
    subprocess.run(
        [sys.executable, "-m", "devsupervisor", "service", "uninstall"],
        cwd=tree,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert not (home / ".config/systemd/user/devsup-demo-review-2.service").exists()
