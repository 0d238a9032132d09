"""Server-sent events: framing, and the log line shapes the page shows.

The page gets `status`, `history`, `ports`, `log` and `logerror` events; every payload is JSON.
Log items come in three shapes (a structured devsup record, a platform output line, a compose
service line); `log_line` turns each into `{source, ts, text}` so the page renders one shape.
"""

from __future__ import annotations

import json
import re
from typing import Any

# One very long line (a build's whole output in one record) must not make the page crawl.
MAX_TEXT = 4000
# Terminal control sequences (compose's `logs` clears lines with ESC[2K) and other control
# characters, which a page shows as garbage; tabs stay.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
# Keys every record has; the rest are shown as key=value after the event name.
_RECORD_KEYS = ("ts", "level", "event")


def frame(event: str, data: Any) -> bytes:
    """One SSE message. JSON never holds a raw newline, so `data` is a single line."""
    payload = json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def comment(text: str) -> bytes:
    """A comment line: keeps the connection alive, ignored by EventSource."""
    return f": {text}\n\n".encode()


def _value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def log_line(item: dict[str, Any], source: str) -> dict[str, Any]:
    """`{source, ts, text}` for one item of a log stream."""
    if "line" in item:
        text = str(item["line"])
    elif item.get("event") == "stream.dropped":
        text = f"... {item.get('dropped')} lines dropped (the page fell behind)"
    else:
        fields = " ".join(f"{k}={_value(v)}" for k, v in item.items() if k not in _RECORD_KEYS)
        # The time of day is enough on a live page: HH:MM:SS.mmm of the ISO `ts`.
        clock = str(item.get("ts", ""))[11:23]
        text = f"{clock} {item.get('level', 'info'):<7} {item.get('event', '')} {fields}".strip()
    return {
        "source": str(item.get("source", source)),
        "ts": item.get("ts"),
        "level": item.get("level"),
        "text": _CONTROL.sub("", text)[:MAX_TEXT],
    }
