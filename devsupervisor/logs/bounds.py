"""Size bounds for log records: a capped JSON line per record, a cheap size estimate for rings.

A record is one JSON line in the log file, one item in the in-memory streams and one line of a
`logs`/`events` reply, so one record's size bounds all three. Whatever a field holds (a build's
output, a 300 MB line a program printed without a newline), the record that leaves `cap_record`
is at most `RECORD_MAX_BYTES` of JSON: the biggest fields are cut short with a marker saying how
much was left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# A record's JSON line is at most this long. Big enough for a compiler's error tail or a Python
# traceback in one record; small enough that a 5 MiB log file still holds 80 worst-case records
# and that a reply or a follower's queue built from them stays small. (The control socket's
# request limit is the same 64 KiB.)
RECORD_MAX_BYTES = 64 * 1024
# The fields every record needs to make sense; never cut.
_KEEP = frozenset({"ts", "level", "event"})


def truncation_marker(dropped: int, unit: str = "chars") -> str:
    return f"...[truncated {dropped} {unit}]"


def encode(record: Mapping[str, Any]) -> str:
    """The record as the log file's JSON line (without the newline)."""
    return json.dumps(record, default=str, ensure_ascii=False)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. a circular structure
        return str(value)


def cap_record(
    record: Mapping[str, Any], limit: int = RECORD_MAX_BYTES
) -> tuple[dict[str, Any], str]:
    """`record` with its biggest fields truncated so that its JSON line fits in `limit` bytes.

    Returns the (possibly) truncated record and its JSON line. Fields other than ts, level and
    event are cut largest first; a truncated non-string field becomes a string.
    """
    capped = dict(record)
    # Cut any single string far over the limit before serialising: json.dumps of a 300 MB
    # string would itself cost 300 MB and seconds of the loop.
    for key, value in capped.items():
        if key not in _KEEP and isinstance(value, str) and len(value) > limit:
            capped[key] = value[:limit] + truncation_marker(len(value) - limit)
    line = encode(capped)
    size = len(line.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return capped, line
    for key in sorted(
        (k for k in capped if k not in _KEEP), key=lambda k: len(_text(capped[k])), reverse=True
    ):
        text = _text(capped[key])
        marker_room = len(truncation_marker(len(text)))
        # Each char dropped shortens the UTF-8 JSON by at least one byte.
        keep = max(0, len(text) - (size - limit) - marker_room)
        capped[key] = text[:keep] + truncation_marker(len(text) - keep)
        line = encode(capped)
        size = len(line.encode("utf-8", "surrogatepass"))
        if size <= limit:
            return capped, line
    # Only ts/level/event are left and still too big (an absurd event name): keep its head.
    capped = {k: _text(v)[: limit // 8] for k, v in record.items() if k in _KEEP}
    capped["truncated"] = True
    return capped, encode(capped)


def record_size(record: Mapping[str, Any]) -> int:
    """About how many bytes `record` takes as JSON: cheap enough for every record in a ring."""
    size = 2
    for key, value in record.items():
        size += len(key) + 6
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, bool | int | float) or value is None:
            size += 8
        else:
            size += len(str(value))
    return size
