"""Bounded by construction: capped records, cut lines, output tails, rings bounded in entries and
bytes, and output lines that never become events."""

from __future__ import annotations

import asyncio
import json

from devsupervisor.logs.bounds import RECORD_MAX_BYTES, cap_record, record_size
from devsupervisor.logs.broadcast import Broadcaster, drop_marker
from devsupervisor.logs.lines import MAX_LINE_BYTES, LineSplitter, OutputTail, pump_lines
from devsupervisor.logs.streams import EVENTS_HISTORY_BYTES, LOG_HISTORY_BYTES, LogStreams
from devsupervisor.platform.build import ERROR_TAIL_BYTES, BuildResult, run_command


def test_small_record_is_unchanged() -> None:
    """A record under the cap comes back as it was, with its JSON line."""
    record = {"ts": "t", "level": "info", "event": "build.started", "trigger": ["a.go"]}
    capped, line = cap_record(record)
    assert capped == record
    assert json.loads(line) == record


def test_huge_field_is_cut_with_a_marker() -> None:
    """A 20 MB field leaves a record whose JSON line fits the cap and says it was truncated."""
    record = {"ts": "t", "level": "error", "event": "build.failed", "output": "x" * 20_000_000}
    capped, line = cap_record(record)
    assert len(line.encode()) <= RECORD_MAX_BYTES
    assert capped["event"] == "build.failed"
    assert "truncated" in capped["output"]
    assert json.loads(line)["output"].startswith("xxx")


def test_many_big_fields_and_escapes_fit_the_cap() -> None:
    """Non-string fields and characters JSON escapes six-fold still end under the cap."""
    record = {
        "ts": "t",
        "level": "info",
        "event": "x",
        "a": "\x00" * 30_000,
        "b": ["é" * 1000] * 40,
        "c": "ü" * 40_000,
    }
    _, line = cap_record(record)
    assert len(line.encode()) <= RECORD_MAX_BYTES


def test_splitter_cuts_a_line_without_newline_and_keeps_the_next() -> None:
    """A line over the limit is handed on cut with a marker; the rest of it is skipped, the
    following line is whole."""
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_line=10)
    for chunk in (b"short\nabcdefgh", b"ijklmnop" * 1000, b"qrs\nnext\r\nlast"):
        splitter.feed(chunk)
    splitter.close()
    assert lines == ["short", "abcdefghij...[line cut at 10 bytes]", "next", "last"]


def test_pump_reads_a_50_mb_line_in_bounded_pieces() -> None:
    """50 MB without a newline from a real process become one cut line, and the reader's buffer
    never holds more than a chunk."""

    async def scenario() -> list[str]:
        proc = await asyncio.create_subprocess_shell(
            "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo after",
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        await pump_lines(proc.stdout, lines.append)
        await proc.wait()
        return lines

    lines = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert len(lines) == 2
    assert len(lines[0]) < MAX_LINE_BYTES + 100
    assert lines[0].endswith(f"[line cut at {MAX_LINE_BYTES} bytes]")
    assert lines[1] == "after"


def test_output_tail_bounds_lines_and_bytes() -> None:
    """The tail keeps the newest lines within both bounds; a huge newest line keeps its end."""
    tail = OutputTail(max_lines=3, max_bytes=100)
    for i in range(10):
        tail.append(f"line {i}")
    assert tail.lines() == ("line 7", "line 8", "line 9")
    tail.append("y" * 500 + "END")
    (only,) = tail.lines()
    assert len(only) <= 100
    assert only.endswith("END")


def test_failed_build_flooding_output_keeps_a_small_result() -> None:
    """A build printing 50 MB without newlines and failing leaves a small result and error."""

    async def scenario() -> tuple[BuildResult, int]:
        seen = 0

        def on_line(line: str) -> None:
            nonlocal seen
            seen += 1

        result = await run_command(
            "head -c 50000000 /dev/zero | tr '\\0' x; exit 1", cwd="/", on_line=on_line
        )
        return result, seen

    result, seen = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert not result.ok
    assert seen == 1
    assert sum(map(len, result.output)) < 64 * 1024
    assert result.error_tail is not None
    assert len(result.error_tail) <= ERROR_TAIL_BYTES + 100


def test_ring_is_bounded_in_entries_and_bytes() -> None:
    """A ring drops the oldest items once either bound is passed; the newest always stays."""
    ring: Broadcaster[dict[str, str]] = Broadcaster(
        drop_marker, 100, history_bytes=1000, sizeof=record_size
    )
    for i in range(50):
        ring.publish({"line": f"{i:03d}" + "x" * 100})
    assert ring.recent_bytes <= 1000
    assert ring.recent()[-1]["line"].startswith("049")
    assert len(ring.recent()) < 10
    ring.publish({"line": "y" * 5000})
    assert [item["line"][0] for item in ring.recent()] == ["y"]


def test_subscriber_queue_is_bounded_in_bytes() -> None:
    """A follower that never reads holds at most its byte bound; it then gets a drop marker."""

    async def scenario() -> None:
        hub: Broadcaster[dict[str, str]] = Broadcaster(drop_marker, sizeof=record_size)
        sub = hub.subscribe(maxsize=1000, max_bytes=2000)
        for _ in range(100):
            hub.publish({"line": "z" * 100})
        assert sub.pending_bytes <= 2000
        items = [await anext(sub) for _ in range(sub.pending + 1)]
        assert items[-1]["event"] == "stream.dropped"

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_output_lines_are_never_events() -> None:
    """1,500 build output lines leave every lifecycle event in the events ring; the lines go to
    the devsup log stream, platform output to the platform stream."""
    streams = LogStreams()
    streams.tap({"ts": "t", "level": "info", "event": "build.started"})
    for i in range(1500):
        streams.tap({"ts": "t", "level": "debug", "event": "build.output", "line": f"o{i}"})
        streams.tap({"ts": "t", "level": "debug", "event": "compose.output", "line": f"c{i}"})
        streams.tap({"ts": "t", "level": "info", "event": "platform.output", "line": f"p{i}"})
    streams.tap({"ts": "t", "level": "error", "event": "build.failed", "output": "o1499"})
    assert [e["event"] for e in streams.events.recent()] == ["build.started", "build.failed"]
    assert streams.sources["devsup"].recent(1)[0]["event"] == "build.failed"
    assert streams.sources["devsup"].recent(2)[0]["line"] == "c1499"
    assert streams.sources["platform"].recent(1)[0]["line"] == "p1499"


def test_stream_rings_hold_huge_records_within_bytes() -> None:
    """Capped 64 KiB records cannot push a stream ring past its byte bound."""
    streams = LogStreams()
    big = "b" * (60 * 1024)
    for _ in range(200):
        streams.tap({"ts": "t", "level": "info", "event": "platform.output", "line": big})
        streams.tap({"ts": "t", "level": "error", "event": "build.failed", "output": big})
    assert streams.sources["platform"].recent_bytes <= LOG_HISTORY_BYTES
    assert streams.sources["devsup"].recent_bytes <= LOG_HISTORY_BYTES
    assert streams.events.recent_bytes <= EVENTS_HISTORY_BYTES
