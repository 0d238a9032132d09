"""`devsup service install | uninstall | status`: the systemd user unit that runs `devsup run`.

Pure functions returning dataclasses; the CLI prints them. `systemctl` is reached through the
`run` seam (`subprocess.run` by default), always with `--user` and the caller's environment
(with `HOME` set to `home` when one is given, so systemctl looks where we wrote).

Whether a user manager answers decides what is done: with one, install reloads it, enables the
unit and starts (or, if the unit changed, restarts) it; without one (ssh, sudo, containers), the
unit is still enabled offline (`systemctl --user enable` only writes a symlink) so it starts at
the next login, and the commands to start it now are returned for the user to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from devsupervisor.errors import ConfigNotFound, UsageError
from devsupervisor.systemd.unit_file import (
    MARKER,
    exec_start_of,
    is_ours,
    quote_exec,
    render_unit,
)

log = structlog.get_logger(__name__)

# The one unit of devsup before instances; `install` retires it when it runs the same config.
UNIT_NAME = "devsup.service"


# Variables of the installing shell the daemon's children need: `go` and `docker` are often on a
# PATH the user manager does not have (/usr/local/go/bin, ~/go/bin), and rootless Docker is
# found through DOCKER_HOST.
CARRIED_ENV = ("PATH", "DOCKER_HOST")

# How long one systemctl call may take; `disable --now` waits for the daemon's stop sequence.
SYSTEMCTL_TIMEOUT = 120.0

# The ExecStart of the unit shipped in systemd/devsup.service, which install replaces with
# absolute paths: there devsup is looked up on the user manager's PATH.
SHIPPED_EXEC = ("/usr/bin/env", "devsup", "run")

Runner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class CommandRun:
    """One systemctl invocation that was run, and how it ended."""

    argv: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class InstallResult:
    unit_path: Path
    exec_start: tuple[str, ...]
    changed: bool  # the unit file was written (new, or different content)
    manager: bool  # a systemd user manager answered
    enabled: bool  # the unit is enabled (starts at login)
    ran: tuple[CommandRun, ...]
    todo: tuple[tuple[str, ...], ...]  # commands for the user to run (no manager answered)
    retired: Path | None = None  # the pre-instances devsup.service this unit replaced

    @property
    def ok(self) -> bool:
        # Without a manager a failed offline enable is no error: `todo` then carries enable --now.
        return not self.manager or all(c.ok for c in self.ran)


@dataclass(frozen=True)
class UninstallResult:
    unit_path: Path
    removed: bool  # False when there was no unit to remove
    manager: bool
    ran: tuple[CommandRun, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.ran)


@dataclass(frozen=True)
class ServiceStatus:
    unit_path: Path
    installed: bool  # a unit file exists at unit_path
    ours: bool  # ... and install wrote it
    exec_start: str | None  # the ExecStart= value as written
    manager: bool
    enabled: str | None  # `systemctl --user is-enabled` (works without a manager)
    active: str | None  # `systemctl --user is-active`, only when a manager answers


def unit_name(instance: str | None) -> str:
    """One unit per instance, named after it ("Instances"): `devsup-<instance>.service`.
    None names the single `devsup.service` of devsup before instances."""
    return UNIT_NAME if instance is None else f"devsup-{instance}.service"


def unit_dir(home: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where user units go: `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "systemd" / "user"
    base = home if home is not None else Path(env.get("HOME") or Path.home())
    return base / ".config" / "systemd" / "user"


def devsup_command(devsup_path: str | None = None) -> tuple[str, ...]:
    """The absolute command that runs devsup: given path, argv[0], PATH, else `python -m`."""
    if devsup_path:
        return (os.path.abspath(devsup_path),)
    # The devsup being run now wins over another one earlier on PATH. Symlinks are kept as they
    # are, so a pipx/pip upgrade behind them needs no re-install.
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "devsup" and os.access(argv0, os.X_OK):
        return (os.path.abspath(argv0),)
    found = shutil.which("devsup")
    if found:
        return (os.path.abspath(found),)
    return (sys.executable, "-m", "devsupervisor")


def install(
    config_path: Path | None,
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    devsup_path: str | None = None,
    force: bool = False,
    run: Runner = subprocess.run,
    instance: str | None = None,
) -> InstallResult:
    """Write the unit for `devsup run --config <config_path> --instance <instance>` and enable
    and start it. Units of other instances are left alone; a `devsup.service` of devsup before
    instances that runs the same config is stopped and removed (it would run a second daemon).

    Args:
        config_path: the config the service runs with; None lets `devsup run` search for one.
        home: the home directory to install into (default `$HOME`).
        environ: the environment to read XDG_CONFIG_HOME and CARRIED_ENV from (default os.environ).
        devsup_path: the devsup executable to run (default: see `devsup_command`).
        force: overwrite a devsup.service that install did not write.
        run: stands in for `subprocess.run`.
        instance: the instance the unit runs (`unit_name`); None for the single devsup.service.

    Raises:
        ConfigNotFound: config_path does not exist.
        UsageError: a devsup.service not written by install is in the way (and not force).
    """
    env = dict(os.environ if environ is None else environ)
    command = (*devsup_command(devsup_path), "run")
    if config_path is not None:
        config = Path(os.path.abspath(config_path))
        if not config.is_file():
            raise ConfigNotFound("no such config file", file=str(config))
        command = (*command, "--config", str(config))
    if instance is not None:
        # Explicit: a renamed worktree directory must not change which daemon the unit runs.
        command = (*command, "--instance", instance)
    name = unit_name(instance)
    carried = {name: env[name] for name in CARRIED_ENV if env.get(name)}
    text = MARKER + "\n" + render_unit(command, carried)

    path = unit_dir(home, env) / name
    current = _read(path)
    if current is not None and not is_ours(current) and not force:
        raise UsageError(f"{path} was not written by devsup; remove it or use --force")
    changed = current != text
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    log.info("service.installed", unit=str(path), changed=changed)

    systemctl = _Systemctl(run, home, env)
    manager = systemctl.manager_answers()
    retired, retiring = _retire_legacy(path, command, systemctl, manager)
    if manager:
        # restart on a change (a running daemon keeps its old ExecStart until restarted); start
        # is a no-op when already running. --no-block: READY=1 may be minutes away on first run.
        ran = (
            *retiring,
            systemctl("daemon-reload"),
            enabled := systemctl("enable", name),
            systemctl("restart" if changed else "start", "--no-block", name),
        )
        return InstallResult(path, command, changed, True, enabled.ok, ran, (), retired)
    enable = systemctl("enable", name)
    todo = [_systemctl_argv("daemon-reload")]
    todo.append(
        _systemctl_argv("start", name) if enable.ok else _systemctl_argv("enable", "--now", name)
    )
    return InstallResult(
        path, command, changed, False, enable.ok, (*retiring, enable), tuple(todo), retired
    )


def _retire_legacy(
    unit: Path, command: Sequence[str], systemctl: _Systemctl, manager: bool
) -> tuple[Path | None, tuple[CommandRun, ...]]:
    """Stop and remove the pre-instances devsup.service when it is ours and runs the config
    `command` runs: it is this instance's daemon under its old unit name."""
    legacy = unit.with_name(UNIT_NAME)
    if legacy == unit or "--config" not in command:
        return None, ()
    text = _read(legacy)
    config = command[list(command).index("--config") + 1]
    exec_start = exec_start_of(text) or ""
    runs_config = f" --config {quote_exec(config, False)} " in f"{exec_start} "
    if text is None or not is_ours(text) or not runs_config:
        return None, ()
    ran = systemctl("disable", "--now", UNIT_NAME) if manager else systemctl("disable", UNIT_NAME)
    legacy.unlink()
    log.info("service.retired", unit=str(legacy), replaced_by=str(unit))
    return legacy, (ran,)


def uninstall(
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run: Runner = subprocess.run,
    instance: str | None = None,
) -> UninstallResult:
    """Stop, disable and remove the unit install wrote for `instance`; nothing else (other
    instances' units stay).

    Raises:
        UsageError: the unit there was not written by install.
    """
    env = dict(os.environ if environ is None else environ)
    name = unit_name(instance)
    path = unit_dir(home, env) / name
    current = _read(path)
    systemctl = _Systemctl(run, home, env)
    manager = systemctl.manager_answers()
    if current is None:
        return UninstallResult(path, False, manager, ())
    if not is_ours(current):
        raise UsageError(f"{path} was not written by devsup service install; leaving it alone")
    # Disable before removing: systemctl needs the unit file to find the symlinks enable made,
    # and --now stops the daemon while its unit is still loaded.
    ran = [systemctl("disable", "--now", name) if manager else systemctl("disable", name)]
    path.unlink()
    if manager:
        ran.append(systemctl("daemon-reload"))
    log.info("service.uninstalled", unit=str(path))
    return UninstallResult(path, True, manager, tuple(ran))


def status(
    *,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run: Runner = subprocess.run,
    instance: str | None = None,
) -> ServiceStatus:
    """Whether `instance`'s unit is installed (and by us), enabled, and active."""
    env = dict(os.environ if environ is None else environ)
    name = unit_name(instance)
    path = unit_dir(home, env) / name
    current = _read(path)
    systemctl = _Systemctl(run, home, env)
    manager = systemctl.manager_answers()
    enabled = active = None
    if current is not None:
        # is-enabled/is-active exit non-zero for "disabled"/"inactive": the output is the answer.
        enabled = systemctl("is-enabled", name).output.strip() or None
        if manager:
            active = systemctl("is-active", name).output.strip() or None
    return ServiceStatus(
        unit_path=path,
        installed=current is not None,
        ours=current is not None and is_ours(current),
        exec_start=exec_start_of(current),
        manager=manager,
        enabled=enabled,
        active=active,
    )


class _Systemctl:
    """`systemctl --user ...` through the run seam, never raising for a missing binary."""

    def __init__(self, run: Runner, home: Path | None, environ: dict[str, str]) -> None:
        self._run = run
        self._env = dict(environ)
        if home is not None:
            self._env["HOME"] = str(home)

    def manager_answers(self) -> bool:
        # show-environment succeeds exactly when the user manager answers on its bus;
        # is-system-running also fails for a merely "degraded" manager.
        return self("show-environment").ok

    def __call__(self, *args: str) -> CommandRun:
        argv = _systemctl_argv(*args)
        try:
            done = self._run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=SYSTEMCTL_TIMEOUT,
                check=False,
                env=self._env,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("service.systemctl_failed", argv=list(argv), error=str(exc))
            return CommandRun(argv, -1, str(exc))
        output = (done.stdout or "") + (done.stderr or "")
        return CommandRun(argv, done.returncode, output)


def _systemctl_argv(*args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
