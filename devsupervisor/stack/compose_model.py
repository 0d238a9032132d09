"""What a resolved compose model (`docker compose config --format json`) says about a remote run.

Two questions matter when the engine is on another machine: which ports its services publish
(forwarded to the same port here) and which services bind-mount a path (compose resolves it
here, the engine mounts it from the remote machine's filesystem: compose#8484/#9075/#11141).
Pure functions over the JSON; `load_model` runs compose to get it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devsupervisor.errors import ComposeError

# `compose config` parses and interpolates the files; seconds even for a large stack.
CONFIG_TIMEOUT = 60.0


@dataclass(frozen=True)
class BindMount:
    """A service's bind mount: `source` is a path of the machine compose runs on."""

    service: str
    source: str
    target: str

    def sentence(self) -> str:
        return (
            f"service {self.service} bind-mounts {self.source} (at {self.target}); with a remote "
            f"engine that path is taken from the remote machine, not this one"
        )


async def load_model(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Run `docker compose ... config --format json` (argv given in full) and parse it.

    Raises:
        ComposeError: compose failed, timed out or printed something that is not an object.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CONFIG_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ComposeError(f"docker compose config timed out after {CONFIG_TIMEOUT}s") from None
    if proc.returncode != 0:
        raise ComposeError(f"docker compose config: {err.decode(errors='replace').strip()}")
    try:
        model = json.loads(out)
    except ValueError as exc:
        raise ComposeError(f"docker compose config printed no JSON: {exc}") from None
    if not isinstance(model, dict):
        raise ComposeError("docker compose config printed no JSON object")
    return model


def _services(model: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    services = model.get("services")
    if not isinstance(services, dict):
        return {}
    return {name: spec for name, spec in services.items() if isinstance(spec, dict)}


def published_ports(
    model: Mapping[str, Any], services: Sequence[str] | None = None
) -> dict[int, str]:
    """TCP ports the services publish on the engine's host, to the service publishing each.

    A range (`8000-8002`) gives each of its ports; a port with no published number (the engine
    picks one) is left out: there is nothing known to forward.
    """
    chosen = _services(model)
    if services is not None:
        chosen = {name: spec for name, spec in chosen.items() if name in services}
    ports: dict[int, str] = {}
    for name, spec in sorted(chosen.items()):
        for entry in spec.get("ports") or []:
            if not isinstance(entry, dict) or entry.get("protocol", "tcp") != "tcp":
                continue
            for port in _published(entry.get("published")):
                ports.setdefault(port, name)
    return ports


def _published(value: object) -> list[int]:
    text = str(value).strip() if value not in (None, "") else ""
    low, _, high = text.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        return []
    first, last = int(low), int(high or low)
    return [p for p in range(first, last + 1) if 0 < p < 65536]


def bind_mounts(model: Mapping[str, Any], services: Sequence[str] | None = None) -> list[BindMount]:
    """Every bind mount of the services (in the resolved model: absolute local paths)."""
    found: list[BindMount] = []
    for name, spec in sorted(_services(model).items()):
        if services is not None and name not in services:
            continue
        for volume in spec.get("volumes") or []:
            if isinstance(volume, dict) and volume.get("type") == "bind":
                found.append(
                    BindMount(name, str(volume.get("source", "")), str(volume.get("target", "")))
                )
    return found
