"""Progress lines of `switch`/`rebuild`: only what happened since the request, escaped."""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devsupervisor.cli.progress import Progress
from devsupervisor.control.protocol import Request
from devsupervisor.control.server import ControlServer
from devsupervisor.logs.pipeline import utc_iso
from tests.harness import wait_until


class History:
    """The daemon's `events`: recent history, then (with `follow`) what comes next.

    `lagging` makes the follow stream withhold the last event, as a stream the request's
    reply overtook would."""

    def __init__(self) -> None:
        self.now = time.time()
        self.lagging = False

    def recent(self) -> list[dict[str, Any]]:
        return [
            {"ts": utc_iso(self.now - 60), "event": "build.started", "trigger": ["old"]},
            {"ts": utc_iso(self.now + 600), "event": "build.started", "trigger": ["new"]},
            {"ts": utc_iso(self.now + 600), "event": "change.detected"},  # not a progress line
            {"event": "platform.ready", "pid": "\x1b[31m7"},  # no ts: shown, escaped
        ]

    async def __call__(self, req: Request) -> AsyncIterator[dict[str, Any]] | list[Any]:
        if not req.args.get("follow"):
            return self.recent()
        delivered = self.recent()[:-1] if self.lagging else self.recent()

        async def events() -> AsyncIterator[dict[str, Any]]:
            for event in delivered:
                yield event
            await asyncio.Event().wait()  # then nothing, until the client leaves

        return events()


@pytest.fixture
def server() -> Iterator[tuple[ControlServer, History]]:
    runtime = Path(tempfile.mkdtemp(prefix="dsp-"))
    history = History()
    loop = asyncio.new_event_loop()
    control = ControlServer(runtime / "devsup" / "p.sock", history)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(control.start(), loop).result(10)
        yield control, history
        asyncio.run_coroutine_threadsafe(control.close(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        shutil.rmtree(runtime, ignore_errors=True)


def test_progress_skips_history_and_escapes(server: tuple[ControlServer, History]) -> None:
    """Events from before the request are not shown; later ones are, with their text escaped."""
    control, _ = server
    out = io.StringIO()
    with Progress(control.path, "rebuilding", out=out):
        wait_until(lambda: "platform.ready" in out.getvalue(), 10, "platform.ready printed")
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "build.started trigger=new",
        "platform.ready pid=\\x1b[31m7",
    ]


def test_progress_prints_the_events_the_stream_had_not_delivered(
    server: tuple[ControlServer, History],
) -> None:
    """The request's reply can overtake its last events on the follow stream: they are read
    once more at the end, and each event is printed once."""
    control, history = server
    history.lagging = True
    out = io.StringIO()
    with Progress(control.path, "rebuilding", out=out):
        wait_until(lambda: "build.started" in out.getvalue(), 10, "build.started printed")
        assert "platform.ready" not in out.getvalue()
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "build.started trigger=new",
        "platform.ready pid=\\x1b[31m7",
    ]
