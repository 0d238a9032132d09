"""The command table: every control action, each a small unit with `validate` and `execute`.

The socket server hands every request to `dispatcher(daemon)`; the CLI is only a client of it.
Validation turns raw JSON args into typed values (or a `bad_args` error naming the argument);
execution calls the daemon. File-change rebuilds and health restarts call the same daemon
methods that `rebuild` and `restart` call here, so each action has one path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devsupervisor.control.protocol import BAD_ARGS, FAILED, UNKNOWN_COMMAND, ProtocolError, Request
from devsupervisor.control.server import Dispatch, Reply
from devsupervisor.errors import OperationFailed, UsageError
from devsupervisor.logs.streams import follow_stream

if TYPE_CHECKING:
    from devsupervisor.control.api import Supervisor

# `logs` without -n: a screenful.
DEFAULT_LINES = 100
# `events -f` starts with this many recent events.
FOLLOW_BACKLOG = 10
# No client can ask the daemon to serialise more than its ring buffer anyway.
MAX_LINES = 10_000


def _check_args(args: dict[str, Any], allowed: dict[str, type | tuple[type, ...]]) -> None:
    for key, value in args.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise ProtocolError(BAD_ARGS, f"unknown argument {key!r} (takes: {names})")
        expected = allowed[key]
        # bool is an int in Python; a JSON true is not a line count.
        if isinstance(value, bool) and expected is int:
            raise ProtocolError(BAD_ARGS, f"argument {key!r} must be an integer, got {value!r}")
        if value is not None and not isinstance(value, expected):
            kind = getattr(expected, "__name__", str(expected))
            raise ProtocolError(BAD_ARGS, f"argument {key!r} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class Command:
    name: str
    args: dict[str, type | tuple[type, ...]]
    execute: Callable[[Supervisor, dict[str, Any]], Awaitable[Reply]]
    required: tuple[str, ...] = ()

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        _check_args(args, self.args)
        for key in self.required:
            if args.get(key) is None:
                raise ProtocolError(BAD_ARGS, f"{self.name} needs argument {key!r}")
        return args


async def _status(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    return daemon.status()


async def _switch(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    stack = args["stack"]
    if stack not in daemon.stack_names():
        known = ", ".join(daemon.stack_names())
        raise ProtocolError(BAD_ARGS, f"no stack named {stack!r} (stacks: {known})")
    if daemon.is_current(stack):
        return daemon.status()
    wait = bool(args.get("wait", True))
    ok = await daemon.switch(stack, wait=wait)
    if not wait:
        return {"switching": stack}
    if not ok:
        raise ProtocolError(FAILED, f"stack {stack} did not come up: {daemon.stack_problem()}")
    return daemon.status()


async def _rebuild(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    ok = await daemon.rebuild()
    result = daemon.platform_status()
    if not ok:
        build = result["last_build"]
        error = build["error"] if build is not None else None
        raise ProtocolError(FAILED, error or f"platform is {result['state']}")
    return result


async def _restart(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    return await daemon.restart(args["name"])


async def _pause(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    daemon.pause()
    return {"paused": True}


async def _resume(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    daemon.resume()
    return {"paused": False}


async def _logs(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    lines = args.get("lines")
    lines = DEFAULT_LINES if lines is None else lines
    if not 0 <= lines <= MAX_LINES:
        raise ProtocolError(BAD_ARGS, f"argument 'lines' must be 0..{MAX_LINES}, got {lines}")
    return await daemon.read_logs(
        args.get("name") or "platform", lines, follow=bool(args.get("follow"))
    )


async def _events(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    if args.get("follow"):
        # Like `tail -f`: a few recent events first, so a follower sees where things stand.
        return follow_stream(daemon.events, backlog=FOLLOW_BACKLOG)
    return daemon.events.recent()


async def _stop(daemon: Supervisor, args: dict[str, Any]) -> Reply:
    down = daemon.request_stop(down=bool(args.get("down", False)))
    return {"stopping": True, "down": down}


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("status", {}, _status),
        Command("switch", {"stack": str, "wait": bool}, _switch, required=("stack",)),
        Command("rebuild", {}, _rebuild),
        Command("restart", {"name": str}, _restart, required=("name",)),
        Command("pause", {}, _pause),
        Command("resume", {}, _resume),
        Command("logs", {"name": str, "lines": int, "follow": bool}, _logs),
        Command("events", {"follow": bool}, _events),
        Command("stop", {"down": bool}, _stop),
    )
}


def dispatcher(daemon: Supervisor) -> Dispatch:
    """The dispatch function (socket server and dashboard) bound to one daemon's actions."""

    async def dispatch(request: Request) -> Reply:
        command = COMMANDS.get(request.cmd)
        if command is None:
            known = ", ".join(COMMANDS)
            raise ProtocolError(UNKNOWN_COMMAND, f"unknown command {request.cmd!r} ({known})")
        try:
            return await command.execute(daemon, command.validate(request.args))
        except UsageError as exc:
            raise ProtocolError(BAD_ARGS, str(exc)) from exc
        except OperationFailed as exc:
            raise ProtocolError(FAILED, str(exc)) from exc

    return dispatch
