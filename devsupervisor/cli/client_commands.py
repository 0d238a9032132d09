"""The client commands: each sends one request to the daemon and prints what it answered.

Imported for client commands only, and kept light (no asyncio, YAML, structlog or docker; see
`tests/test_cli_imports.py`): `devsup status` should cost little more than starting Python.
Text from the daemon reaches the terminal escaped (`terminal`); JSON output is ASCII-escaped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from devsupervisor.cli.daemon_socket import socket_for
from devsupervisor.cli.status_view import render
from devsupervisor.cli.terminal import escape, for_stream
from devsupervisor.control.client import Client
from devsupervisor.errors import UsageError

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from devsupervisor.status_types import PlatformStatus, Status

# How long `devsup stop` waits for the daemon to be gone before saying so.
STOP_WAIT = 30.0


def _socket(args: argparse.Namespace) -> Path:
    return socket_for(args.instance, args.config)


def _print_json(obj: Any) -> None:
    # ensure_ascii (the default) writes control characters as \u escapes: safe on a terminal.
    print(json.dumps(obj, indent=2, default=str))


def cmd_status(args: argparse.Namespace) -> int:
    with Client(_socket(args)) as client:
        status: Status = client.call("status")
    if args.json:
        _print_json(status)
    else:
        print(render(status))
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    wait = not args.no_wait
    socket = _socket(args)
    request = {"stack": args.stack, "wait": wait}
    with Client(socket, timeout=None if wait else 10) as client:
        if not wait:
            client.call("switch", request)
            print(f"switching to {escape(args.stack)}")
            return 0
        from devsupervisor.cli.progress import Progress  # threads: only for a waiting switch

        with Progress(socket, f"switching to {args.stack}"):
            result: Status = client.call("switch", request)
    line = f"stack {result['stack']}: {result['state']}, platform {result['platform']['state']}"
    print(escape(line))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from devsupervisor.cli.progress import Progress

    socket = _socket(args)
    with Client(socket, timeout=None) as client, Progress(socket, "rebuilding"):
        result: PlatformStatus = client.call("rebuild")
    build = result["last_build"]
    duration = build["duration"] if build is not None else 0.0
    print(escape(f"platform {result['state']} (build {duration:.2f}s)"))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    with Client(_socket(args), timeout=None) as client:
        result = client.call("restart", {"name": args.name})
    print(escape(f"{args.name}: {result.get('state')}"))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    return _simple(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _simple(args, "resume")


def _simple(args: argparse.Namespace, cmd: str) -> int:
    with Client(_socket(args)) as client:
        result = client.call(cmd)
    print(json.dumps(result))
    return 0


def _format_log(item: dict[str, Any]) -> str:
    if "line" in item:
        return for_stream(
            f"{item.get('ts', '')} {item.get('source', '')} | {item['line']}", sys.stdout
        )
    return json.dumps(item, default=str)


def cmd_logs(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError(f"-n {args.lines}: must be 0 or more")
    request = {"name": args.name, "lines": args.lines, "follow": args.follow}
    with Client(_socket(args)) as client:
        if args.follow:
            for item in client.stream("logs", request):
                print(_format_log(item), flush=True)
        else:
            for item in client.call("logs", request):
                print(_format_log(item))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    with Client(_socket(args)) as client:
        if args.follow:
            for item in client.stream("events", {"follow": True}):
                print(json.dumps(item, default=str), flush=True)
        else:
            for item in client.call("events"):
                print(json.dumps(item, default=str))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    socket = _socket(args)
    with Client(socket) as client:
        result = client.call("stop", {"down": args.down})
    deadline = time.monotonic() + STOP_WAIT
    while socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the daemon's exit from outside; no event to wait on
    print("stopped" + (" (stack down)" if result.get("down") else ""))
    return 0
