"""The `devsup` command line. The only place that turns errors into exit codes.

Exit codes (PRODUCT.md): 0 done; 1 the operation failed; 2 usage or config error; 3 no daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devsupervisor import __version__, paths
from devsupervisor.cli.progress import Progress
from devsupervisor.cli.status_view import render
from devsupervisor.config import find_config, load_config, read_project_leniently, render_resolved
from devsupervisor.control.client import Client
from devsupervisor.errors import (
    ConfigError,
    DaemonNotRunning,
    DevsupError,
    UsageError,
)
from devsupervisor.logs import pipeline as logs
from devsupervisor.systemd import unit as service

# How long `devsup stop` waits for the daemon to be gone before saying so.
STOP_WAIT = 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devsup", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"devsup {__version__}")
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--project", help="project whose daemon to talk to")
    client.add_argument("--config", help="config file (only its project: key is read)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the supervisor in the foreground")
    run.add_argument("--config", help="config file")
    run.add_argument("--stack", help="stack to start (default: the remembered one)")

    status = sub.add_parser("status", parents=[client], help="show stack, platform, services")
    status.add_argument("--json", action="store_true", help="print the status object")

    switch = sub.add_parser("switch", parents=[client], help="switch to another stack")
    switch.add_argument("stack")
    switch.add_argument("--no-wait", action="store_true", help="return once the switch began")

    sub.add_parser("rebuild", parents=[client], help="rebuild and restart the platform now")
    restart = sub.add_parser("restart", parents=[client], help="restart platform or a service")
    restart.add_argument("name")
    sub.add_parser("pause", parents=[client], help="stop acting on file changes")
    sub.add_parser("resume", parents=[client], help="act on file changes again")

    logs = sub.add_parser("logs", parents=[client], help="recent log lines")
    logs.add_argument("name", nargs="?", default="platform", help="platform, a service, devsup")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=100)

    events = sub.add_parser("events", parents=[client], help="supervisor events as JSON lines")
    events.add_argument("-f", "--follow", action="store_true")

    stop = sub.add_parser("stop", parents=[client], help="stop the daemon")
    stop.add_argument("--down", action="store_true", help="also stop the stack (keeps volumes)")

    config = sub.add_parser("config", help="config tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config and print it resolved")
    check.add_argument("path", nargs="?")

    svc = sub.add_parser("service", help="the systemd user unit")
    svc.add_argument("action", choices=["install", "uninstall", "status"])
    svc.add_argument("--config", help="config file the unit runs with")
    svc.add_argument("--force", action="store_true", help="replace a unit devsup did not write")
    return parser


def _socket_for(args: argparse.Namespace) -> Path:
    """Client commands need only the project name (PRODUCT.md, in this order)."""
    if args.project:
        return paths.socket_path(args.project)
    try:
        found: Path | None = find_config(args.config)
    except ConfigError:
        found = None
    if found is not None:
        project = read_project_leniently(found)
        if project:
            return paths.socket_path(project)
    only = paths.find_only_socket()
    if only is not None:
        return only
    raise DaemonNotRunning(
        f"no devsup daemon found (no config with a project: key, no socket in "
        f"{paths.socket_dir()}); start one with `devsup run` or `devsup service install`"
    )


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    from devsupervisor.daemon import Daemon  # the daemon's imports are heavy; clients skip them

    # When systemd's watchdog fires it sends SIGABRT: leave every thread's traceback in the journal.
    faulthandler.enable()
    config = load_config(find_config(args.config))

    async def main() -> int:
        return await Daemon(config, stack=args.stack).run()

    return asyncio.run(main())


def cmd_status(args: argparse.Namespace) -> int:
    with Client(_socket_for(args)) as client:
        status = client.call("status")
    if args.json:
        _print_json(status)
    else:
        print(render(status))
    return 0


def cmd_switch(args: argparse.Namespace) -> int:
    wait = not args.no_wait
    socket = _socket_for(args)
    with Client(socket, timeout=None if wait else 10) as client:
        if wait:
            with Progress(socket, f"switching to {args.stack}"):
                result = client.call("switch", {"stack": args.stack, "wait": wait})
        else:
            result = client.call("switch", {"stack": args.stack, "wait": wait})
    if wait:
        print(f"stack {result['stack']}: {result['state']}, platform {result['platform']['state']}")
    else:
        print(f"switching to {args.stack}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    socket = _socket_for(args)
    with Client(socket, timeout=None) as client, Progress(socket, "rebuilding"):
        result = client.call("rebuild")
    build = result.get("last_build") or {}
    print(f"platform {result['state']} (build {build.get('duration', 0):.2f}s)")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    with Client(_socket_for(args), timeout=None) as client:
        result = client.call("restart", {"name": args.name})
    print(f"{args.name}: {result.get('state')}")
    return 0


def _simple(cmd: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with Client(_socket_for(args)) as client:
            result = client.call(cmd)
        print(json.dumps(result))
        return 0

    return run


def _format_log(item: dict[str, Any]) -> str:
    if "line" in item:
        return f"{item.get('ts', '')} {item.get('source', '')} | {item['line']}"
    return json.dumps(item, default=str)


def cmd_logs(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError(f"-n {args.lines}: must be 0 or more")
    request = {"name": args.name, "lines": args.lines, "follow": args.follow}
    with Client(_socket_for(args)) as client:
        if args.follow:
            for item in client.stream("logs", request):
                print(_format_log(item), flush=True)
        else:
            for item in client.call("logs", request):
                print(_format_log(item))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    with Client(_socket_for(args)) as client:
        if args.follow:
            for item in client.stream("events", {"follow": True}):
                print(json.dumps(item, default=str), flush=True)
        else:
            for item in client.call("events"):
                print(json.dumps(item, default=str))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    socket = _socket_for(args)
    with Client(socket) as client:
        result = client.call("stop", {"down": args.down})
    deadline = time.monotonic() + STOP_WAIT
    while socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the daemon's exit from outside; no event to wait on
    print("stopped" + (" (stack down)" if result.get("down") else ""))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = load_config(find_config(args.path))
    sys.stdout.write(render_resolved(config))
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    if args.action == "install":
        config_path = find_config(args.config)
        result = service.install(config_path, force=args.force)
        print(f"{'wrote' if result.changed else 'unchanged'} {result.unit_path}")
        for run in result.ran:
            print(f"ran: {' '.join(run.argv)} (exit {run.returncode})")
        if result.todo:
            if result.enabled:
                print("enabled (starts at next login); no user manager answers, to start it now:")
            else:
                print("no systemd user manager answers here; run these to enable and start it:")
            for argv in result.todo:
                print("  " + " ".join(argv))
        return 0 if result.ok else 1
    if args.action == "uninstall":
        removed = service.uninstall()
        print(f"{'removed' if removed.removed else 'nothing to remove at'} {removed.unit_path}")
        return 0 if removed.ok else 1
    st = service.status()
    print(f"unit     {st.unit_path} ({'installed' if st.installed else 'not installed'})")
    if st.exec_start:
        print(f"runs     {st.exec_start}")
    print(
        f"enabled  {st.enabled or '-'}   active {st.active or '-'}   manager "
        f"{'yes' if st.manager else 'no'}"
    )
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "switch": cmd_switch,
    "rebuild": cmd_rebuild,
    "restart": cmd_restart,
    "pause": _simple("pause"),
    "resume": _simple("resume"),
    "logs": cmd_logs,
    "events": cmd_events,
    "stop": cmd_stop,
    "config": cmd_config,
    "service": cmd_service,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        # Client commands print their own results; library log records would only repeat them.
        logs.configure(None, console=None)
    try:
        return HANDLERS[args.command](args)
    except DevsupError as exc:
        print(f"devsup: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `devsup logs | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
