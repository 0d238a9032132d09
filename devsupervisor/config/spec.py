"""The config file's shape, declared once: keys, kinds, defaults, choices and descriptions.

`load.py` checks files against `SPEC` and `schema.py` renders it as JSON Schema, so the two agree by
construction. Defaults are those of PRODUCT.md; `default_stack` has none here because it is
computed (the first stack).
"""

from __future__ import annotations

import re

from devsupervisor.config.fields import (
    Boolean,
    Choice,
    Environment,
    Field,
    Integer,
    ListOf,
    NamedSections,
    Seconds,
    Section,
    Text,
)
from devsupervisor.config.model import ReadyKind

# Docker compose's own rule for project names; the name also ends up in socket and state paths.
PROJECT_NAME = r"[a-z0-9][a-z0-9_-]*"
# Compose service names, and the same rule for stack names (they are typed on the command line).
SERVICE_NAME = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
STACK_NAME = SERVICE_NAME
PROJECT_NAME_HINT = (
    "a project name (lowercase letters, digits, '-' and '_', starting with a letter or digit)"
)
TCP_ADDRESS = r"(?:\[[0-9a-fA-F:.]+\]|[^\s:\[\]/]+):[0-9]{1,5}"
HTTP_URL = r"https?://\S+"
MAX_PORT = 65535

# A fixed list (not `signal.Signals`) so the generated schema is the same on every platform.
_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL")
SIGNAL_NAMES = tuple(f"SIG{s}" for s in _SIGNALS) + _SIGNALS
PLATFORM_MODES = ("binary", "container")
ON_EXIT = ("keep", "down")
READY_KINDS: tuple[ReadyKind, ...] = ("http", "tcp", "log")


def _valid_regex(text: str) -> str | None:
    try:
        re.compile(text)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    return None


def _valid_port(text: str) -> str | None:
    port = int(text.rsplit(":", 1)[1])
    return None if 0 < port <= MAX_PORT else f"port {port} is out of range 1-{MAX_PORT}"


_NAMES = ListOf(Text())
_PATH = Text()

STACK = Section(
    (
        Field(
            "files",
            _NAMES,
            default=[],
            description="Compose files added after the base files, relative to compose.directory.",
        ),
        Field(
            "profiles", _NAMES, default=[], description="Compose profiles enabled in this stack."
        ),
        Field(
            "platform",
            Choice(PLATFORM_MODES),
            default="binary",
            description="How the platform runs in this stack: host binary or compose container.",
        ),
    )
)

READY = Section(
    (
        Field(
            "http",
            Text(pattern=HTTP_URL, pattern_hint="an http:// or https:// URL"),
            description="Ready when this URL answers 2xx.",
        ),
        Field(
            "tcp",
            Text(pattern=TCP_ADDRESS, pattern_hint="host:port", validator=_valid_port),
            description="Ready when host:port accepts a connection.",
        ),
        Field(
            "log",
            Text(validator=_valid_regex, format="regex"),
            description="Ready when a platform output line matches this regular expression.",
        ),
        Field(
            "timeout",
            Seconds(positive=True),
            default=30,
            description="Seconds to wait for readiness before the start counts as failed.",
        ),
    ),
    exactly_one_of=READY_KINDS,
)

BINARY = Section(
    (
        Field(
            "workdir",
            _PATH,
            required=True,
            description="Directory the build and run commands run in, relative to the config file.",
        ),
        Field(
            "build",
            Text(),
            required=True,
            description="Shell command that builds the platform binary.",
        ),
        Field(
            "run", Text(), required=True, description="Shell command that runs the built platform."
        ),
        Field(
            "env",
            Environment(),
            default={},
            description="Extra environment for the build and run commands.",
        ),
        Field(
            "ready",
            READY,
            description="Readiness check: exactly one of http, tcp or log, and optionally timeout.",
        ),
        Field(
            "stop_signal",
            Choice(SIGNAL_NAMES, label="a signal name such as SIGTERM or TERM"),
            default="SIGTERM",
            description="Signal sent to the platform's process group to stop it.",
        ),
        Field(
            "stop_timeout",
            Seconds(),
            default=5,
            description="Seconds to wait after stop_signal before SIGKILL of the process tree.",
        ),
    )
)

CONTAINER = Section(
    (
        Field(
            "service",
            Text(pattern=SERVICE_NAME, pattern_hint="a compose service name"),
            default="platform",
            description="The compose service that runs the platform.",
        ),
        Field(
            "prebuild",
            Text(),
            description="Optional host command run in binary.workdir before the image build.",
        ),
    )
)

WATCH = Section(
    (
        Field(
            "paths",
            ListOf(_PATH, min_items=1),
            required=True,
            description="Source trees to watch, relative to the config file.",
        ),
        Field(
            "include",
            _NAMES,
            default=["**/*.go", "go.mod", "go.sum"],
            description="Globs of files whose changes trigger a build.",
        ),
        Field(
            "ignore",
            _NAMES,
            default=["**/*_test.go", "bin/**"],
            description="Globs never watched, added to .gitignore rules and editor temp files.",
        ),
        Field(
            "debounce",
            Seconds(),
            default=0.1,
            description="Settle window for changes that keep coming; a lone save builds at once.",
        ),
    )
)

PLATFORM = Section(
    (
        Field(
            "watch", WATCH, required=True, description="What source changes rebuild the platform."
        ),
        Field(
            "binary",
            BINARY,
            description="The platform as a host binary; needed when a stack uses it.",
        ),
        Field(
            "container",
            CONTAINER,
            description="The platform as a compose service; needed when a stack uses it.",
        ),
        Field(
            "restart_on",
            ListOf(Text(pattern=SERVICE_NAME, pattern_hint="a compose service name")),
            default=[],
            description="Compose services whose restart also restarts the platform.",
        ),
    )
)

COMPOSE = Section(
    (
        Field(
            "directory",
            _PATH,
            default="../docker-compose",
            description="Where the compose files are, relative to the config file.",
        ),
        Field(
            "files",
            _NAMES,
            default=["docker-compose.yaml"],
            description="Base compose files, always applied first.",
        ),
    )
)

DEPENDENCIES = Section(
    (
        Field(
            "restart_unhealthy",
            Boolean(),
            default=True,
            description="Restart compose services that die or turn unhealthy.",
        ),
        Field(
            "backoff",
            Section(
                (
                    Field(
                        "initial",
                        Seconds(positive=True),
                        default=1,
                        description="First restart delay in seconds.",
                    ),
                    Field(
                        "max",
                        Seconds(positive=True),
                        default=30,
                        description="Longest restart delay in seconds.",
                    ),
                )
            ),
            default={},
            description="Exponential backoff between restarts of one service.",
        ),
        Field(
            "give_up_after",
            Section(
                (
                    Field(
                        "restarts",
                        Integer(minimum=1),
                        default=5,
                        description="Restarts within the window after which devsup gives up.",
                    ),
                    Field(
                        "within",
                        Seconds(positive=True),
                        default=300,
                        description="The window, in seconds.",
                    ),
                )
            ),
            default={},
            description="When to stop restarting a service that keeps failing.",
        ),
    )
)

SPEC = Section(
    (
        Field(
            "project",
            Text(
                pattern=PROJECT_NAME,
                pattern_hint=PROJECT_NAME_HINT,
            ),
            required=True,
            description="Compose project name; also names the socket and state files.",
        ),
        Field(
            "compose",
            COMPOSE,
            default={},
            description="Where the compose files are and which ones every stack uses.",
        ),
        Field(
            "stacks",
            NamedSections(
                STACK,
                key=Text(
                    pattern=STACK_NAME,
                    pattern_hint="a stack name (letters, digits, '.', '-' and '_')",
                ),
            ),
            required=True,
            description="The stacks devsup can run, by name.",
        ),
        Field(
            "default_stack",
            Text(pattern=STACK_NAME, pattern_hint="a stack name"),
            description="Stack started when none is chosen; the first stack when absent.",
        ),
        Field(
            "platform",
            PLATFORM,
            required=True,
            description="The Go platform devsup builds, runs and watches.",
        ),
        Field(
            "dependencies",
            DEPENDENCIES,
            default={},
            description="How compose services are kept healthy.",
        ),
        Field(
            "on_exit",
            Choice(ON_EXIT),
            default="keep",
            description="What `devsup run` does to the stack when it stops: keep or down.",
        ),
    )
)
