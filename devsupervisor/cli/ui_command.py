"""`devsup ui`: print the dashboard's login URL and open it in a browser where one can be opened.

The URL comes from the daemon (`status.dashboard.url`), the token from the file the daemon wrote
beside its state file (0600, so only this user can read it). Light like the other client
commands: no aiohttp, no daemon code.
"""

from __future__ import annotations

import argparse
import os
import sys

from devsupervisor import paths
from devsupervisor.cli.daemon_socket import socket_for
from devsupervisor.cli.terminal import escape
from devsupervisor.control.client import Client
from devsupervisor.dashboard.token_file import login_url, read_token, token_path
from devsupervisor.errors import OperationFailed


def can_open_browser() -> bool:
    """A graphical session (or a BROWSER the user chose) to open a page in.

    Without one, `webbrowser` would fall back to a console browser inside this terminal.
    """
    if os.environ.get("BROWSER"):
        return True
    if sys.platform == "darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_ui(args: argparse.Namespace) -> int:
    socket = socket_for(args.instance, args.config)
    with Client(socket) as client:
        status = client.call("status")
    dashboard = status.get("dashboard")
    if not dashboard:
        raise OperationFailed(
            "the dashboard is off (`dashboard: false` in the config) or did not start "
            "(see `devsup logs devsup`)"
        )
    path = token_path(paths.state_file(socket.stem))
    try:
        token = read_token(path)
    except OSError as exc:
        raise OperationFailed(f"cannot read the dashboard token {path}: {exc.strerror}") from exc
    url = login_url(str(dashboard["url"]), token)
    print(escape(url))
    if not args.no_browser and can_open_browser():
        import webbrowser  # only when a browser is opened

        webbrowser.open(url)
    return 0
