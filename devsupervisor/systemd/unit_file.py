"""The text of devsup's systemd user unit: the template, and quoting by systemd's rules (so any
path or value survives `ExecStart=` and `Environment=` unchanged)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# First line of every unit install writes; uninstall removes no unit without it.
MARKER = "# Installed by devsup service install; `devsup service uninstall` removes it."

UNIT_TEMPLATE = """\
# devsup: supervises the local dev stack (compose services and the platform) for this user.
# `devsup service install` writes this unit to ~/.config/systemd/user/ with the absolute paths of
# devsup and of its config; the copy in the repository finds devsup on the manager's PATH.

[Unit]
Description=devsup: local dev stack supervisor

[Service]
Type=notify
ExecStart={exec_start}
{environment}\
# READY=1 and WATCHDOG=1 count only from devsup itself, not from the processes it spawns.
NotifyAccess=main
# devsup pings from its event loop every 15 s; a loop wedged for 30 s gets the service restarted.
WatchdogSec=30
Restart=on-failure
RestartSec=2
# Exit 2 is a config or usage error (or another daemon already running): restarting cannot fix it.
RestartPreventExitStatus=2
# READY=1 waits for the stack and the platform; a first start may pull images and build.
TimeoutStartSec=300
# Stopping covers the platform's stop_timeout and, with on_exit: down, stopping the stack.
TimeoutStopSec=90
# SIGTERM to devsup alone: it stops its children in order. Leftovers are killed at the timeout.
KillMode=mixed

[Install]
WantedBy=default.target
"""


def render_unit(exec_start: Sequence[str], environment: Mapping[str, str] | None = None) -> str:
    """The unit text for a command line and environment (no install marker)."""
    env_lines = "".join(
        f"Environment={_quote_env(name, value)}\n" for name, value in (environment or {}).items()
    )
    return UNIT_TEMPLATE.format(
        exec_start=" ".join(quote_exec(arg, i == 0) for i, arg in enumerate(exec_start)),
        environment=env_lines,
    )


def is_ours(text: str) -> bool:
    return text.startswith(MARKER + "\n")


def exec_start_of(text: str | None) -> str | None:
    for line in (text or "").splitlines():
        if line.startswith("ExecStart="):
            return line.removeprefix("ExecStart=")
    return None


def _escape(value: str) -> str:
    # `%` starts a specifier everywhere in a unit; backslash and quote are escapes in quotes.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def quote_exec(arg: str, is_executable: bool) -> str:
    # ExecStart= expands $VAR and ${VAR} in arguments (`$$` is a literal dollar), but not in the
    # executable path, where `$$` would stay two dollars.
    escaped = _escape(arg) if is_executable else _escape(arg).replace("$", "$$")
    if escaped and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return escaped
    return f'"{escaped}"'


def _quote_env(name: str, value: str) -> str:
    return f'"{name}={_escape(value)}"'
