"""`devsup ls [--json]`: every instance of this user whose daemon answers (contract: "Instances").

Each socket in the socket directory is asked for its status with a short timeout; a stale socket
or a daemon that does not answer in time is left out. Light like every client command (no
asyncio, YAML, structlog or docker).
"""

from __future__ import annotations

import argparse
import json
import stat

from devsupervisor import paths
from devsupervisor.cli.terminal import escape
from devsupervisor.control.client import Client
from devsupervisor.errors import DevsupError

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

# A daemon answers `status` in milliseconds; one that takes longer is busy or wedged and must not
# hold up the listing of the others for the client's full default timeout.
STATUS_TIMEOUT = 2.0
# The keys of each object `--json` prints, in the contract's order.
KEYS = ("instance", "project", "checkout", "stack", "state", "ports", "dashboard")


def sockets() -> list[Path]:
    """The control sockets in the socket directory, by name."""
    try:
        found = sorted(paths.socket_dir().glob(f"*{paths.SOCKET_SUFFIX}"))
    except OSError:
        return []
    return [path for path in found if _is_socket(path)]


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False


def entry(socket: Path) -> dict[str, Any] | None:
    """One instance's row from its daemon's status, or None when it does not answer."""
    try:
        with Client(socket, timeout=STATUS_TIMEOUT) as client:
            status = client.call("status")
    except (DevsupError, OSError):
        # OSError: not a daemon's stream socket (a platform's datagram notify socket lives in
        # the same directory: EPROTOTYPE), or gone meanwhile.
        return None
    if not isinstance(status, dict):
        return None
    dashboard = status.get("dashboard")
    return {
        # A daemon older than instances names no instance: its socket does.
        "instance": status.get("instance") or socket.stem,
        "project": status.get("project"),
        "checkout": status.get("checkout"),
        "stack": status.get("stack"),
        "state": status.get("state"),
        "ports": status.get("ports") or {},
        "dashboard": dashboard.get("url") if isinstance(dashboard, dict) else None,
    }


def render(rows: list[dict[str, Any]]) -> str:
    """The rows as a table for a terminal, each instance's ports on an indented line under it
    (they would make the table too wide). Each cell is escaped: the strings come from daemons."""
    header = ("INSTANCE", "PROJECT", "STACK", "STATE", "DASHBOARD", "CHECKOUT")
    cells = [
        tuple(
            escape(str(row[key] if row[key] is not None else "-"))
            for key in ("instance", "project", "stack", "state", "dashboard", "checkout")
        )
        for row in rows
    ]
    # Escaped before measuring, so the columns line up as shown.
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header) - 1)]

    def line(values: tuple[str, ...]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(values, widths, strict=False))
        return ("  ".join(padded) + "  " + values[-1]).rstrip()

    lines = [line(header)]
    for row, values in zip(rows, cells, strict=True):
        lines.append(line(values))
        if row["ports"]:
            ports = "  ".join(f"{name}={port}" for name, port in row["ports"].items())
            lines.append(escape(f"  ports  {ports}"))
    return "\n".join(lines)


def cmd_ls(args: argparse.Namespace) -> int:
    rows = sorted(
        (row for row in map(entry, sockets()) if row is not None), key=lambda r: str(r["instance"])
    )
    if args.json:
        # ensure_ascii (the default) writes control characters as \u escapes: safe on a terminal.
        print(json.dumps(rows, indent=2))
    elif rows:
        print(render(rows))
    else:
        print(f"no devsup daemon answers in {paths.socket_dir()}")
    return 0
