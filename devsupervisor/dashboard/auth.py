"""Who may use the dashboard: the token, the Host rule, the Origin rule (the contract, "Dashboard").

- Token: a fresh random one per daemon start (`token_file`). A request carries it once in the
  query string (answered with an HttpOnly, SameSite=Strict cookie), or in the cookie, or as
  `Authorization: Bearer`. Without it: 401.
- Host: only `127.0.0.1:PORT` and `localhost:PORT`, so a page on another name that resolves to
  127.0.0.1 (DNS rebinding) is refused with 403 even before the token is looked at.
- Origin: a POST (the only method that changes anything) whose `Origin` is present and not the
  dashboard's own is refused with 403, so another site cannot drive the daemon through a browser
  that holds the cookie. No CORS headers are ever sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import structlog
from aiohttp import web

from devsupervisor.dashboard.token_file import TOKEN_PARAM

log = structlog.get_logger()

# Loopback names a browser on this machine uses for the dashboard.
LOCAL_HOSTS = ("127.0.0.1", "localhost")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Guard:
    """The three rules for one dashboard instance (its token and port)."""

    token: str
    port: int

    @property
    def cookie(self) -> str:
        # Cookies are per host, not per port: two dashboards on 127.0.0.1 need two names.
        return f"devsup_token_{self.port}"

    def is_local_host(self, host: str | None) -> bool:
        return host in {f"{name}:{self.port}" for name in LOCAL_HOSTS}

    def is_own_origin(self, origin: str, host: str) -> bool:
        return origin == f"http://{host}"

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(
            candidate.encode("utf-8", "replace"), self.token.encode()
        )

    def credential(self, request: web.Request) -> str | None:
        """How the request proved itself: `query`, `cookie`, `bearer`, or None."""
        if self._matches(request.query.get(TOKEN_PARAM)):
            return "query"
        if self._matches(request.cookies.get(self.cookie)):
            return "cookie"
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(value.strip()):
            return "bearer"
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Apply Host, token and Origin rules, in that order, before any handler runs."""
        if not self.is_local_host(request.host):
            return _refuse(request, 403, "host", f"Host {request.host!r} is not this dashboard")
        how = self.credential(request)
        if how is None:
            return _refuse(request, 401, "token", "a dashboard token is needed (see `devsup ui`)")
        origin = request.headers.get("Origin")
        foreign = origin is not None and not self.is_own_origin(origin, request.host)
        if request.method == "POST" and foreign:
            return _refuse(request, 403, "origin", f"Origin {origin!r} is not this dashboard")
        if how == "query" and request.method == "GET" and request.path == "/":
            # Trade the token in the address bar for the cookie, and drop it from the URL
            # (history, bookmarks, screen shares).
            query = {k: v for k, v in request.query.items() if k != TOKEN_PARAM}
            location = "/" + (f"?{urlencode(query)}" if query else "")
            response: web.StreamResponse = web.Response(status=303, headers={"Location": location})
        else:
            response = await handler(request)
        if how == "query":
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/")
        return response


def _refuse(request: web.Request, status: int, rule: str, message: str) -> web.Response:
    log.warning(
        "dashboard.refused", rule=rule, status=status, method=request.method, path=request.path
    )
    return web.Response(status=status, text=message + "\n")
