"""End to end with the real Go example: edit a .go file and /version serves the new value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.harness import REPO, DaemonProcess, free_port, http_get, wait_until, write_atomic


def test_edit_go_source_serves_new_version(tmp_path: Path, project_name: str) -> None:
    """A one-constant edit to cmd/main.go is built with `go build` and served."""
    src = tmp_path / "platform-services"
    shutil.copytree(
        REPO / "examples" / "platform-services", src, ignore=shutil.ignore_patterns("bin")
    )
    port = free_port()
    config = tmp_path / "devsup.yaml"
    config.write_text(
        json.dumps(
            {
                "project": project_name,
                "compose": {"files": []},
                "stacks": {"skeleton": {"platform": "binary"}},
                "platform": {
                    "watch": {"paths": ["platform-services"]},
                    "binary": {
                        "workdir": "platform-services",
                        "build": "go build -o bin/platform ./cmd",
                        "run": "./bin/platform",
                        "env": {"PLATFORM_ADDR": f"127.0.0.1:{port}"},
                        "ready": {"http": f"http://127.0.0.1:{port}/healthz", "timeout": 30},
                    },
                },
            }
        )
    )
    daemon = DaemonProcess(config, project=project_name)
    try:
        daemon.start()
        daemon.wait_platform("running", timeout=120)
        assert http_get(f"http://127.0.0.1:{port}/version") == "v1"
        main = src / "cmd" / "main.go"
        write_atomic(main, main.read_text().replace('"v1"', '"v2-edited"'))
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/version") == "v2-edited",
            timeout=120,
            what="edited version served",
        )
        status = daemon.status()
        assert status["platform"]["last_build"]["trigger"] == [str(main)]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
