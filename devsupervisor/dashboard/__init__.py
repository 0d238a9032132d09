"""The dashboard: a local web page on the daemon's state, reloads, logs and actions.

`server.DashboardServer` serves it (aiohttp, 127.0.0.1 only) behind the rules of `auth`;
`history.History` keeps the reload chart and the start/switch timeline from the event stream;
`static/` holds the page (HTML, CSS, JS; no build step).
"""
