"""A platform that misbehaves on request: the fault suite's stand-in for a real server.

Behaviour is chosen by words in `bin/app.txt` (what the fake build copied from src/app.txt), so a
test scripts it through the sources as a real edit would:
- IGNORE_TERM: ignores SIGTERM (only SIGKILL stops it);
- SLOW_START:  waits SLOW_START_SECONDS before it listens (time to freeze it mid-readiness);
- EXIT_EARLY:  exits with code 4 shortly after start, before it listens;
otherwise (and after a slow start) serves /healthz and /version on PLATFORM_ADDR.
The pid is written to bin/pid at start, so a test can signal the process itself.
"""

import http.server
import os
import signal
import sys
import time
from pathlib import Path

SLOW_START_SECONDS = 1.5

text = Path("bin/app.txt").read_text().strip()
Path("bin/pid").write_text(str(os.getpid()))
print(f"faulty platform {text} pid {os.getpid()}", flush=True)
if "IGNORE_TERM" in text:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if "EXIT_EARLY" in text:
    time.sleep(0.2)
    sys.exit(4)
if "SLOW_START" in text:
    time.sleep(SLOW_START_SECONDS)

host, _, port = os.environ["PLATFORM_ADDR"].rpartition(":")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (text if self.path == "/version" else "ok").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


try:
    server = http.server.HTTPServer((host, int(port)), Handler)
except OSError as exc:
    print(f"cannot listen on {host}:{port}: {exc.strerror}", flush=True)
    sys.exit(1)
print("listening", flush=True)
server.serve_forever()
