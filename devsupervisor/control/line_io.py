"""Newline-framed I/O on a control connection's asyncio streams, for `server`.

Reading is bounded by the stream's limit (`protocol.MAX_LINE`): an over-long line is read
through to its newline and discarded, so the connection stays usable after a client bug.
"""

from __future__ import annotations

import asyncio
from typing import Any

from devsupervisor.control import protocol


class LineTooLongError(Exception):
    """A request line over MAX_LINE; it has been read through its newline and discarded."""


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """The next line (b"" at EOF; a final line without newline is returned as is).

    Raises:
        LineTooLongError: after discarding the whole over-long line.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError as exc:
        consumed = exc.consumed
    while True:
        await reader.readexactly(consumed)  # leaves the rest in the buffer; bounded by limit
        try:
            await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed
            continue
        except asyncio.IncompleteReadError:
            pass  # EOF in the middle of the long line: report it, the next read sees EOF
        raise LineTooLongError


async def wait_for_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop input until the peer closes its write side."""
    while await reader.read(protocol.MAX_LINE):
        pass


async def send(writer: asyncio.StreamWriter, envelope: dict[str, Any]) -> None:
    """Write one envelope as a line and wait until the transport takes it."""
    writer.write(protocol.encode(envelope))
    await writer.drain()
