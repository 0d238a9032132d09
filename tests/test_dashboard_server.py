"""The dashboard server on its own: security rules, the command door, server-sent events.

A real aiohttp server on 127.0.0.1 with a scripted dispatch and status (the daemon's seams).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from devsupervisor.control import protocol
from devsupervisor.control.protocol import ProtocolError, Request
from devsupervisor.dashboard import sse, token_file
from devsupervisor.dashboard.ports import PortLookup
from devsupervisor.dashboard.server import DashboardServer
from devsupervisor.logs.broadcast import Broadcaster, drop_marker

TOKEN = "s3cret-token"


class FakeDaemon:
    """The seams a daemon gives the dashboard: dispatch, status, events."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.state = "running"
        self.events: Broadcaster[dict[str, Any]] = Broadcaster(drop_marker)
        self.platform_lines: Broadcaster[dict[str, Any]] = Broadcaster(drop_marker)

    def status(self) -> dict[str, Any]:
        return {
            "project": "demo",
            "stack": "skeleton",
            "state": self.state,
            "platform": {"state": "running", "uptime": 1.0},
            "services": [],
            "daemon": {"uptime": 2.0},
        }

    async def dispatch(self, request: Request) -> Any:
        self.requests.append(request)
        if request.cmd == "rebuild":
            return {"state": "running", "pid": 42}
        if request.cmd == "switch":
            raise ProtocolError(protocol.BAD_ARGS, f"no stack named {request.args['stack']!r}")
        if request.cmd == "logs" and request.args.get("follow"):
            if request.args["name"] != "platform":
                raise ProtocolError(protocol.BAD_ARGS, "no log source")

            async def follow() -> AsyncIterator[dict[str, Any]]:
                async with self.platform_lines.subscribe(backlog=request.args["lines"]) as sub:
                    async for item in sub:
                        yield item

            return follow()
        raise ProtocolError(protocol.UNKNOWN_COMMAND, f"unknown command {request.cmd!r}")


Scenario = Callable[[DashboardServer, FakeDaemon, aiohttp.ClientSession], Awaitable[None]]


def serve(scenario: Scenario) -> None:
    """Run `scenario` against a started dashboard; always close it."""

    async def main() -> None:
        fake = FakeDaemon()
        server = DashboardServer(
            dispatch=fake.dispatch,
            status=fake.status,
            events=fake.events,
            token=TOKEN,
            status_interval=0.05,
        )
        await server.start()
        try:
            # unsafe=True: the jar keeps cookies of IP-address hosts (127.0.0.1), as browsers do.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                await asyncio.wait_for(scenario(server, fake, session), 20)
        finally:
            await server.close()

    asyncio.run(main())


def bearer(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **extra}


def test_no_token_is_401() -> None:
    """A request without the token is refused with 401, on the page and on the API."""

    async def scenario(server: DashboardServer, _: FakeDaemon, s: aiohttp.ClientSession) -> None:
        for path in ("/", "/api/status", "/api/events"):
            async with s.get(server.url.rstrip("/") + path) as r:
                assert r.status == 401
        async with s.post(server.url + "api/rebuild") as r:
            assert r.status == 401
        async with s.get(server.url + "api/status", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401

    serve(scenario)


def test_query_token_sets_strict_httponly_cookie() -> None:
    """The token in the query string is answered with an HttpOnly, SameSite=Strict cookie."""

    async def scenario(server: DashboardServer, _: FakeDaemon, s: aiohttp.ClientSession) -> None:
        async with s.get(token_file.login_url(server.url, TOKEN), allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
        assert f"devsup_token_{server.port}={TOKEN}" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        # The session now holds the cookie: the page and the API answer without the token.
        async with s.get(server.url) as r:
            assert r.status == 200
            assert "<title>" in await r.text()
        async with s.get(server.url + "api/status") as r:
            assert (await r.json())["stack"] == "skeleton"

    serve(scenario)


def test_bearer_token_is_accepted() -> None:
    """`Authorization: Bearer TOKEN` is as good as the cookie, and sets none."""

    async def scenario(server: DashboardServer, _: FakeDaemon, s: aiohttp.ClientSession) -> None:
        async with s.get(server.url + "api/status", headers=bearer()) as r:
            assert r.status == 200
            assert "Set-Cookie" not in r.headers
            assert (await r.json())["project"] == "demo"

    serve(scenario)


def test_foreign_host_is_403_even_with_token() -> None:
    """A Host other than 127.0.0.1:PORT or localhost:PORT (DNS rebinding) gets 403."""

    async def scenario(server: DashboardServer, _: FakeDaemon, s: aiohttp.ClientSession) -> None:
        port = server.port
        for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", "localhost"):
            async with s.get(server.url + "api/status", headers=bearer(Host=host)) as r:
                assert r.status == 403, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            async with s.get(server.url + "api/status", headers=bearer(Host=host)) as r:
                assert r.status == 200, host

    serve(scenario)


def test_post_with_foreign_origin_is_403() -> None:
    """A POST whose Origin is present and not the dashboard's own is refused and not run."""

    async def scenario(server: DashboardServer, fake: FakeDaemon, s: aiohttp.ClientSession) -> None:
        url = server.url + "api/rebuild"
        for origin in ("http://evil.example", f"http://127.0.0.1:{server.port + 1}", "null"):
            async with s.post(url, headers=bearer(Origin=origin)) as r:
                assert r.status == 403, origin
        assert fake.requests == []
        async with s.post(url, headers=bearer(Origin=f"http://127.0.0.1:{server.port}")) as r:
            assert r.status == 200
        async with s.post(url, headers=bearer()) as r:  # no Origin: a non-browser client
            assert r.status == 200
        assert [r.cmd for r in fake.requests] == ["rebuild", "rebuild"]

    serve(scenario)


def test_changes_need_post_and_no_cors_headers() -> None:
    """Commands are POST only (GET is 405) and no response carries CORS headers."""

    async def scenario(server: DashboardServer, _: FakeDaemon, s: aiohttp.ClientSession) -> None:
        headers = bearer(Origin="http://evil.example")
        async with s.get(server.url + "api/rebuild", headers=bearer()) as r:
            assert r.status == 405
        for method, path in (("GET", "api/status"), ("OPTIONS", "api/rebuild"), ("GET", "")):
            async with s.request(method, server.url + path, headers=headers) as r:
                assert not [h for h in r.headers if h.lower().startswith("access-control-")]

    serve(scenario)


def test_post_command_replies_with_the_socket_envelope() -> None:
    """POST /api/<command> dispatches the socket's Request and answers the socket's envelope."""

    async def scenario(server: DashboardServer, fake: FakeDaemon, s: aiohttp.ClientSession) -> None:
        async with s.post(server.url + "api/rebuild", headers=bearer()) as r:
            assert await r.json() == protocol.ok(None, {"state": "running", "pid": 42})
        async with s.post(server.url + "api/switch", json={"stack": "nope"}, headers=bearer()) as r:
            assert r.status == 400
            assert await r.json() == protocol.error(
                None, protocol.BAD_ARGS, "no stack named 'nope'"
            )
        assert fake.requests[-1] == Request(None, "switch", {"stack": "nope"})
        async with s.post(server.url + "api/switch", data=b"[1]", headers=bearer()) as r:
            assert (await r.json())["error"]["code"] == protocol.BAD_REQUEST
        async with s.post(server.url + "api/frobnicate", headers=bearer()) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == protocol.UNKNOWN_COMMAND
        big = json.dumps({"stack": "x" * (protocol.MAX_LINE + 1)})
        async with s.post(server.url + "api/switch", data=big, headers=bearer()) as r:
            assert r.status == 413

    serve(scenario)


def test_events_stream_status_history_and_logs() -> None:
    """GET /api/events sends the status, a status change, the reload history and log lines."""

    async def scenario(server: DashboardServer, fake: FakeDaemon, s: aiohttp.ClientSession) -> None:
        fake.platform_lines.publish({"ts": "t0", "source": "platform", "line": "before"})
        url = server.url + "api/events?logs=platform&lines=5"
        async with s.get(url, headers=bearer()) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            seen: list[tuple[str, Any]] = []

            async def until(predicate: Callable[[str, Any], bool]) -> None:
                while not any(predicate(e, d) for e, d in seen):
                    event, data = await read_event(r.content)
                    seen.append((event, data))

            await until(lambda e, d: e == "status" and d["state"] == "running")
            await until(lambda e, d: e == "log" and d["text"] == "before")
            fake.state = "degraded"
            fake.platform_lines.publish({"ts": "t1", "source": "platform", "line": "after"})
            fake.events.publish(
                {
                    "ts": "2026-01-01T00:00:00.000Z",
                    "event": "platform.reloaded",
                    **dict.fromkeys(("detect", "build", "stop", "start", "ready"), 0.1),
                    "total": 0.5,
                }
            )
            await until(lambda e, d: e == "log" and d["text"] == "after")
            await until(lambda e, d: e == "status" and d["state"] == "degraded")
            await until(lambda e, d: e == "history" and len(d["reloads"]) == 1)

    serve(scenario)


def test_events_stream_reports_an_unknown_log_source() -> None:
    """A log source the daemon does not know is reported as a `logerror` event."""

    async def scenario(server: DashboardServer, _: FakeDaemon, s: aiohttp.ClientSession) -> None:
        async with s.get(server.url + "api/events?logs=nope", headers=bearer()) as r:
            while True:
                event, data = await read_event(r.content)
                if event == "logerror":
                    assert data == {"source": "nope", "message": "no log source"}
                    return

    serve(scenario)


def test_close_ends_live_event_streams() -> None:
    """Closing the server ends open event streams instead of waiting for the browser."""

    async def main() -> None:
        fake = FakeDaemon()
        server = DashboardServer(
            dispatch=fake.dispatch, status=fake.status, events=fake.events, token=TOKEN
        )
        await server.start()
        async with aiohttp.ClientSession() as s:
            r = await s.get(server.url + "api/events?logs=platform", headers=bearer())
            assert (await read_event(r.content))[0] == "meta"
            await asyncio.wait_for(server.close(), 5)
            assert await asyncio.wait_for(r.content.read(), 5) is not None
            r.close()

    asyncio.run(main())


def test_token_file_is_private(tmp_path: Path) -> None:
    """The token file is written 0600 beside the state file and removed only if still ours."""
    path = token_file.token_path(tmp_path / "state" / "demo.json")
    assert path == tmp_path / "state" / "demo.dashboard-token"
    token_file.write_token(path, "abc")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert token_file.read_token(path) == "abc"
    token_file.remove_token(path, "other")
    assert path.exists()
    token_file.remove_token(path, "abc")
    assert not path.exists()


async def read_event(content: aiohttp.StreamReader) -> tuple[str, Any]:
    """The next SSE message (event name, decoded data), skipping comments."""
    event, data = "message", ""
    while True:
        line = (await content.readline()).decode()
        if not line:
            raise AssertionError("event stream ended")
        line = line.rstrip("\n")
        if not line:
            if data:
                return event, json.loads(data)
            continue
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]


def test_log_lines_lose_terminal_control_sequences() -> None:
    """Compose's line-clearing escapes and other control characters never reach the page."""
    item = {"source": "platform", "line": "\x1b[2K\x1b[31mred\x1b[0m\ttab\x07"}
    assert sse.log_line(item, "platform")["text"] == "red\ttab"
    record = {
        "ts": "2026-01-01T10:11:12.345678Z",
        "level": "error",
        "event": "build.failed",
        "exit_code": 2,
        "trigger": ["a b.go"],
    }
    text = sse.log_line(record, "devsup")["text"]
    assert text == '10:11:12.345 error   build.failed exit_code=2 trigger=["a b.go"]'


def test_port_lookup_caches_and_backs_off_after_a_failure() -> None:
    """Published ports are looked up once per container; a failing engine is not asked again
    for a while."""
    calls: list[str] = []
    now = [0.0]

    class Containers:
        def get(self, container: str) -> Any:
            calls.append(container)
            if container == "dead":
                raise OSError("engine gone")
            ports = {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "15432"}], "9/udp": None}
            return type("C", (), {"attrs": {"NetworkSettings": {"Ports": ports}}})()

    client = type("Client", (), {"containers": Containers(), "close": lambda self: None})()
    lookup = PortLookup(lambda: client, clock=lambda: now[0])

    async def main() -> None:
        wanted = {"postgres": "abc", "broken": "dead", "none": None}
        first = await lookup.ports(wanted)
        assert first == {"postgres": [{"port": 15432, "target": "5432/tcp"}]}
        assert await lookup.ports(wanted) == first
        assert calls == ["abc", "dead"]
        now[0] += 11
        await lookup.ports(wanted)
        assert calls == ["abc", "dead", "dead"]

    asyncio.run(main())
