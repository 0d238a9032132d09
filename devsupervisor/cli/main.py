"""The `devsup` command line. The only place that turns errors into exit codes.

Exit codes (the contract): 0 done; 1 the operation failed; 2 usage or config error; 3 no daemon.

Each command's module is imported only when that command runs (`COMMANDS`): a client command
loads the socket client and nothing of the daemon, the config loader or the log pipeline, so
`devsup status` starts about as fast as Python itself (benchmarks/cli_latency.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from devsupervisor import __version__
from devsupervisor.errors import DevsupError

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

# command -> (module under devsupervisor.cli, function): looked up when the command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("local_commands", "cmd_run"),
    "status": ("client_commands", "cmd_status"),
    "ls": ("ls_command", "cmd_ls"),
    "switch": ("client_commands", "cmd_switch"),
    "rebuild": ("client_commands", "cmd_rebuild"),
    "restart": ("client_commands", "cmd_restart"),
    "pause": ("client_commands", "cmd_pause"),
    "resume": ("client_commands", "cmd_resume"),
    "logs": ("client_commands", "cmd_logs"),
    "events": ("client_commands", "cmd_events"),
    "stop": ("client_commands", "cmd_stop"),
    "ui": ("ui_command", "cmd_ui"),
    "config": ("local_commands", "cmd_config"),
    "service": ("local_commands", "cmd_service"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with the width given, so that argparse does not import `shutil`
    (and with it bz2 and lzma: several ms) for every command only to measure the terminal."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
        except (ValueError, OSError):
            columns = 80
        super().__init__(prog, width=columns - 2)


class _Parser(argparse.ArgumentParser):
    """Every parser and subparser formats with `_HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance", "--project", dest="instance", help="instance whose daemon to talk to"
    )
    parser.add_argument("--config", help="config file (only its instance/project is read)")


def _run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file")
    parser.add_argument("--stack", help="stack to start (default: the remembered one)")
    parser.add_argument(
        "--instance", help="instance name (default: config `instance`, else from the checkout)"
    )


def _status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the status object")


def _switch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stack")
    parser.add_argument("--no-wait", action="store_true", help="return once the switch began")


def _restart(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")


def _logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default="platform", help="platform, a service, devsup")
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("-n", "--lines", type=int, default=100)


def _events(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true")


def _stop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--down", action="store_true", help="also stop the stack (keeps volumes)")


def _ui(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")


def _config(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate a config and print it resolved")
    check.add_argument("path", nargs="?")


def _service(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument("--config", help="config file the unit runs with")
    parser.add_argument("--force", action="store_true", help="replace a unit devsup did not write")
    parser.add_argument("--instance", help="instance whose unit (default: from the config)")


def _nothing(parser: argparse.ArgumentParser) -> None:
    pass


# command -> (help, is a client command, adds its own arguments); in the order `--help` lists.
SUBCOMMANDS: dict[str, tuple[str, bool, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the supervisor in the foreground", False, _run),
    "status": ("show stack, platform, services", True, _status),
    "ls": ("every instance of this user whose daemon answers", False, _status),
    "switch": ("switch to another stack", True, _switch),
    "rebuild": ("rebuild and restart the platform now", True, _nothing),
    "restart": ("restart platform or a service", True, _restart),
    "pause": ("stop acting on file changes", True, _nothing),
    "resume": ("act on file changes again", True, _nothing),
    "logs": ("recent log lines", True, _logs),
    "events": ("supervisor events as JSON lines", True, _events),
    "stop": ("stop the daemon", True, _stop),
    "ui": ("print the dashboard's login URL and open it in a browser", True, _ui),
    "config": ("config tools", False, _config),
    "service": ("the systemd user unit", False, _service),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` the top level and that one command's parser
    (building the other twelve costs every command a few ms; argparse's help texts go through
    gettext, which looks for translation files each time)."""
    parser = _Parser(prog="devsup", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"devsup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, is_client, add_arguments) in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        command = sub.add_parser(name, help=help_text)
        if is_client:
            _client_options(command)
        add_arguments(command)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = list(sys.argv[1:] if argv is None else argv)
    # The command is nearly always the first argument; when it is not (`--help`, a typo), the
    # whole parser does the work and the reporting.
    only = args[0] if args and args[0] in SUBCOMMANDS else None
    return build_parser(only).parse_args(args)


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    module, function = COMMANDS[command]
    found: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"devsupervisor.cli.{module}"), function
    )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return handler(args.command)(args)
    except DevsupError as exc:
        from devsupervisor.cli.terminal import escape

        # Nothing the daemon sent (a RemoteError's message) reaches the terminal unescaped.
        message = "\n".join(escape(line) for line in str(exc).splitlines())
        print(f"devsup: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `devsup logs | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
