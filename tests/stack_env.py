"""A devsup daemon on its own copy of the demo stack: unique project, free ports, own sources.

The platform sources are copied per test (tests edit them) and the platform image gets a
per-test tag, so tests never disturb each other or the developer's demo.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.docker_env import (
    DEMO_STACK,
    PLATFORM_DIR,
    ComposeProject,
    demo_port_env,
    remove_project,
    run,
    unique_project,
)
from tests.harness import DaemonProcess, http_get, private_env


@dataclass
class DemoStack:
    daemon: DaemonProcess
    compose: ComposeProject
    sources: Path
    config: Path

    @property
    def env(self) -> dict[str, str]:
        return self.compose.env

    def url(self, service: str = "PLATFORM") -> str:
        var = "PLATFORM_PORT" if service == "PLATFORM" else f"DEMO_{service.upper()}_PORT"
        return f"http://127.0.0.1:{self.env[var]}"

    def version(self) -> str | None:
        return http_get(self.url() + "/version")

    def running_services(self) -> set[str]:
        label = f"label=com.docker.compose.project={self.compose.name}"
        out = run(
            [
                "docker",
                "ps",
                "--filter",
                label,
                "--format",
                '{{.Label "com.docker.compose.service"}}',
            ]
        ).stdout
        return set(out.split())

    def put(self, key: str, value: str) -> None:
        req = urllib.request.Request(
            f"{self.url('postgres')}/data/{key}", data=value.encode(), method="PUT"
        )
        with urllib.request.urlopen(req, timeout=5):
            pass

    def get(self, key: str) -> str | None:
        return http_get(f"{self.url('postgres')}/data/{key}")

    def edit_version(self, value: str) -> None:
        set_version(self.sources, value)


def set_version(sources: Path, value: str) -> None:
    """Change the demo platform's `const version`, saved by rename as an editor does."""
    main = sources / "cmd" / "main.go"
    text = main.read_text()
    start = text.index('const version = "') + len('const version = "')
    end = text.index('"', start)
    tmp = main.with_name(".main.go.swp")
    tmp.write_text(text[:start] + value + text[end:])
    tmp.replace(main)


def write_config(path: Path, project: str, sources: Path, port: str, **extra: Any) -> None:
    config: dict[str, Any] = {
        "project": project,
        "compose": {"directory": str(DEMO_STACK), "files": ["docker-compose.yaml"]},
        "stacks": {
            "skeleton": {"files": ["docker-compose.monolith.yaml"], "platform": "binary"},
            "fullstack": {
                "files": ["docker-compose.monolith.yaml", "docker-compose.fullstack.yaml"],
                "profiles": ["fullstack"],
                "platform": "container",
            },
        },
        "platform": {
            "watch": {"paths": [str(sources)]},
            "binary": {
                "workdir": str(sources),
                "build": "go build -o bin/platform ./cmd",
                "run": "./bin/platform",
                "env": {"PLATFORM_ADDR": f"127.0.0.1:{port}"},
                "ready": {"http": f"http://127.0.0.1:{port}/healthz", "timeout": 30},
                "stop_timeout": 3,
            },
            "container": {
                "service": "platform",
                "prebuild": "CGO_ENABLED=0 go build -o bin/platform ./cmd",
            },
        },
    }
    config.update(extra)
    path.write_text(json.dumps(config, indent=2))


@pytest.fixture
def demo_stack(demo_images: None, tmp_path: Path) -> Iterator[DemoStack]:
    """A daemon (not yet started) for a unique demo-stack project; everything removed after."""
    name = unique_project("ds")
    sources = tmp_path / "platform-services"
    shutil.copytree(PLATFORM_DIR, sources, ignore=shutil.ignore_patterns("bin"))
    ports = demo_port_env()
    image = f"devsup-test/{name}:local"
    env = {**ports, "PLATFORM_CONTEXT": str(sources), "PLATFORM_IMAGE": image}
    config = tmp_path / "devsup.yaml"
    write_config(config, name, sources, ports["PLATFORM_PORT"])
    daemon = DaemonProcess(config, env={**private_env(), **env}, project=name)
    stack = DemoStack(daemon, ComposeProject(name=name, env=env), sources, config)
    try:
        yield stack
    finally:
        daemon.stop()
        remove_project(name)
        run(["docker", "rmi", "-f", image], timeout=60)
