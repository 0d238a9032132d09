"""The control socket's wire format: newline-delimited JSON objects, UTF-8 (the contract).

Request: `{"id": ..., "cmd": "status", "args": {...}}` (`args` optional).
Replies: `ok(id, result)`, `error(id, code, message)`, and for streaming commands any number of
`event(id, payload)` lines; a stream the daemon ends (it is stopping, or the source ended) ends
with `ok(id, null)`, so a client tells that from a daemon that died (EOF without it).

Pure functions only: no I/O, so the server and the client share it.
"""

from __future__ import annotations

import json
import math

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

# A request is a command name and a few arguments; 64 KiB is far above any real one and bounds
# what one client can make the daemon buffer (the contract).
MAX_LINE: Final = 64 * 1024

# Error codes. The first three are part of the contract; the others are used by the command layer.
BAD_REQUEST: Final = "bad_request"  # not a request at all: too long, not JSON/UTF-8/object, no cmd
UNKNOWN_COMMAND: Final = "unknown_command"
BAD_ARGS: Final = "bad_args"
FORBIDDEN: Final = "forbidden"  # the peer's uid is neither the daemon's nor root
FAILED: Final = "failed"  # the operation ran and failed (build failed, stack did not come up)
INTERNAL: Final = "internal"  # a bug in the daemon; logged with its traceback

RequestId = str | int | float | None


class ProtocolError(Exception):
    """A request the daemon answers with an error envelope instead of a result.

    Raised by `parse_request` and by command handlers; the server turns it into `error(...)`.
    """

    def __init__(self, code: str, message: str, *, request_id: RequestId = None) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{code}: {message}")


class Request:
    """One parsed request. A plain class: `dataclasses` (or `typing.NamedTuple`) would cost
    every client command several ms of start-up."""

    __slots__ = ("args", "cmd", "id")

    def __init__(self, id: RequestId, cmd: str, args: dict[str, Any]) -> None:
        self.id = id
        self.cmd = cmd
        self.args = args

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.id, self.cmd, self.args) == (other.id, other.cmd, other.args)

    __hash__ = None  # type: ignore[assignment]  # mutable args: not hashable, like the dataclass

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, cmd={self.cmd!r}, args={self.args!r})"


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; JSON does not, and other clients would choke on an echo.
    raise ValueError(f"{name} is not valid JSON")


def parse_request(line: bytes) -> Request:
    """Decode one request line (with or without its trailing newline).

    Raises:
        ProtocolError: code `bad_request`, with the request's id when it could be read.
    """
    if len(line.rstrip(b"\r\n")) > MAX_LINE:
        raise ProtocolError(BAD_REQUEST, f"request line over {MAX_LINE} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(BAD_REQUEST, f"request is not UTF-8 ({exc.reason})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # RecursionError: 64 KiB of "[" nests deeper than the parser's stack.
        raise ProtocolError(BAD_REQUEST, f"request is not JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_REQUEST, f"request must be a JSON object, not {_kind(data)}")
    request_id = data.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None):
        raise ProtocolError(BAD_REQUEST, "id must be a string, a number or null")
    # The id is echoed in the reply, so it must survive `encode`: 1e400 parses as infinity,
    # and "\ud800" as a lone surrogate that UTF-8 cannot carry. Refused before anything runs.
    if isinstance(request_id, float) and not math.isfinite(request_id):
        raise ProtocolError(BAD_REQUEST, "id must be a finite number")
    if isinstance(request_id, str) and not _is_utf8_encodable(request_id):
        raise ProtocolError(BAD_REQUEST, "id must be text UTF-8 can carry (no lone surrogates)")
    cmd = data.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError(BAD_REQUEST, "cmd must be a non-empty string", request_id=request_id)
    args = data.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(
            BAD_REQUEST, f"args must be a JSON object, not {_kind(args)}", request_id=request_id
        )
    return Request(id=request_id, cmd=cmd, args=args)


def request(request_id: RequestId, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request envelope a client sends."""
    envelope: dict[str, Any] = {"id": request_id, "cmd": cmd}
    if args:
        envelope["args"] = args
    return envelope


def ok(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def error(request_id: RequestId, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def event(request_id: RequestId, payload: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "event": payload}


def encode(envelope: dict[str, Any]) -> bytes:
    """One line on the wire.

    Raises:
        TypeError, ValueError: the envelope holds something JSON cannot represent.
    """
    text = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Decode one reply line (client side).

    Raises:
        ValueError: the line is not a JSON object.
    """
    data = json.loads(line.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"reply must be a JSON object, not {_kind(data)}")
    return data


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
