"""Output lines of the processes devsup runs (builds, the platform, compose), read in bounded
chunks.

A program may print anything: a 300 MB "line" without a newline, binary junk, an endless
progress bar. The reader never holds more than one read chunk plus one line's head: a line
longer than `MAX_LINE_BYTES` is handed on at that length with a marker, and the rest of it, up
to the next newline, is skipped as it arrives. `OutputTail` keeps the last lines of an output
within a line count and a byte count, for what status and error messages show.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from devsupervisor.logs.bounds import truncation_marker

# Longest line handed on whole. Compiler errors, stack traces and JSON log lines of real programs
# are far shorter; four such lines still fit a 64 KiB log record (bounds.RECORD_MAX_BYTES).
MAX_LINE_BYTES = 16 * 1024
# One read: asyncio's default StreamReader limit, so a read never outgrows the reader's buffer.
READ_CHUNK = 64 * 1024

LineSink = Callable[[str], None]


class LineSplitter:
    """Bytes in, lines (str, without the newline) out; each line at most `max_line` bytes."""

    def __init__(self, on_line: LineSink, max_line: int = MAX_LINE_BYTES) -> None:
        self._on_line = on_line
        self._max_line = max_line
        self._pending = bytearray()
        self._skipping = False  # the current line was handed on cut: drop until its newline

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            if not self._skipping:
                room = self._max_line - len(self._pending)
                if end - start > room:
                    self._pending += chunk[start : start + room]
                    self._emit(cut=True)
                    self._skipping = True
                else:
                    self._pending += chunk[start:end]
            if newline < 0:
                return
            if self._skipping:
                self._skipping = False
            else:
                self._emit(cut=False)
            start = newline + 1

    def close(self) -> None:
        """End of output: hand on an unterminated last line."""
        if self._pending and not self._skipping:
            self._emit(cut=False)

    def _emit(self, *, cut: bool) -> None:
        line = self._pending.decode("utf-8", "replace").rstrip("\r")
        self._pending.clear()
        if cut:
            line += f"...[line cut at {self._max_line} bytes]"
        self._on_line(line)


async def pump_lines(
    stream: asyncio.StreamReader, on_line: LineSink, *, max_line: int = MAX_LINE_BYTES
) -> None:
    """Hand each output line to `on_line` until EOF; over-long lines are cut (see above)."""
    splitter = LineSplitter(on_line, max_line)
    while chunk := await stream.read(READ_CHUNK):
        splitter.feed(chunk)
    splitter.close()


async def iter_lines(
    stream: asyncio.StreamReader, *, max_line: int = MAX_LINE_BYTES
) -> AsyncIterator[str]:
    """The lines of `stream` as an async iterator (same bounds as `pump_lines`)."""
    ready: deque[str] = deque()
    splitter = LineSplitter(ready.append, max_line)
    while chunk := await stream.read(READ_CHUNK):
        splitter.feed(chunk)
        while ready:
            yield ready.popleft()
    splitter.close()
    while ready:
        yield ready.popleft()


class OutputTail:
    """The last lines of an output: at most `max_lines` lines and `max_bytes` characters.

    The newest line always stays (cut to `max_bytes` from its end if need be).
    """

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self._size = 0

    def append(self, line: str) -> None:
        if len(line) > self._max_bytes:
            keep = max(0, self._max_bytes - len(truncation_marker(len(line))))
            line = truncation_marker(len(line) - keep) + line[len(line) - keep :]
        self._lines.append(line)
        self._size += len(line)
        while len(self._lines) > 1 and (
            len(self._lines) > self._max_lines or self._size > self._max_bytes
        ):
            self._size -= len(self._lines.popleft())

    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)
