"""What the daemon remembers between runs: the chosen stack, the platform it started, and the
source fingerprint of the last successful build per platform mode.

Written atomically (temp file + rename) so a `kill -9` mid-write leaves the previous state, and
read leniently: a missing or corrupt file is an empty state, never a reason not to start.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devsupervisor.logs.pipeline import get_logger

log = get_logger()


@dataclass
class SavedState:
    stack: str | None = None
    platform_pid: int | None = None
    platform_create_time: float | None = None
    # mode -> fingerprint of the sources the last successful build in that mode was made from
    builds: dict[str, str] = field(default_factory=dict)


def load(path: Path) -> SavedState:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError) as exc:
        log.warning("state.unreadable", path=str(path), error=str(exc))
        return SavedState()
    if not isinstance(raw, dict):
        return SavedState()
    builds = raw.get("builds")
    return SavedState(
        stack=raw.get("stack") if isinstance(raw.get("stack"), str) else None,
        platform_pid=raw.get("platform_pid") if isinstance(raw.get("platform_pid"), int) else None,
        platform_create_time=raw.get("platform_create_time")
        if isinstance(raw.get("platform_create_time"), int | float)
        else None,
        builds={str(k): str(v) for k, v in builds.items()} if isinstance(builds, dict) else {},
    )


def save(path: Path, state: SavedState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
