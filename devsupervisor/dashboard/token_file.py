"""The dashboard's login token and its file: a fresh token per daemon start, stored 0600 beside
the state file so only the user (and `devsup ui`) can read it.

Light on purpose (no aiohttp): the CLI's `devsup ui` reads the token through this module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from urllib.parse import urlencode

# 32 random bytes: far beyond guessing, short enough to paste.
TOKEN_BYTES = 32
# The query parameter a login link carries.
TOKEN_PARAM = "token"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_path(state_file: Path) -> Path:
    """Where a daemon whose state file is `state_file` keeps its dashboard token."""
    return state_file.with_name(f"{state_file.stem}.dashboard-token")


def write_token(path: Path, token: str) -> None:
    """Write `token` to `path`, readable by the user only (0600 from the first byte).

    Raises:
        OSError: the directory cannot be created or written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_CREAT
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_token(path: Path) -> str:
    """The token a running daemon wrote.

    Raises:
        OSError: no such file, or not readable.
    """
    return path.read_text(encoding="utf-8").strip()


def remove_token(path: Path, token: str) -> None:
    """Remove the token file if it still holds `token` (a newer daemon may have replaced it)."""
    with contextlib.suppress(OSError):
        if read_token(path) == token:
            path.unlink()


def login_url(url: str, token: str) -> str:
    """The dashboard URL with the token that logs a browser in."""
    return f"{url}?{urlencode({TOKEN_PARAM: token})}"
