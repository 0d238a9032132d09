"""Every compose file combination the Makefile and the configs use passes `docker compose config`.

The combinations are not listed by hand: they are read from the configs' stacks and from the
commands `make -n` prints for each flow, so a new stack or flow is checked without editing this.
`docker compose config` resolves and validates without talking to the engine or pulling anything.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docker_env import DEMO_STACK, REAL_STACK, REPO_ROOT, run, unique_project

CONFIGS = (REPO_ROOT / "config" / "devsup.yaml", REPO_ROOT / "config" / "demo.yaml")
STACK_DIRS = (REAL_STACK, DEMO_STACK)
MAKE_FLOWS = (
    "skeleton-up",
    "skeleton-down",
    "fullstack-up",
    "fullstack-down",
    "e2e-skeleton",
    "platform-image",
)
# Every layer of a stack directory, in the order the Makefile applies them.
LAYERS = ("", ".monolith", ".fullstack", ".e2e")
FULLSTACK_ONLY = {"traefik", "emqx", "ai-inference"}
# A compose invocation in `make -n` output: project, then -f/--profile options, then the subcommand.
COMPOSE_CALL = re.compile(r"docker compose -p \S+((?: (?:-f|--profile) \S+)+) (?:up|down|build)\b")


@dataclass(frozen=True)
class Combination:
    """One set of compose files and profiles, and who uses it."""

    origin: str
    files: tuple[Path, ...]
    profiles: tuple[str, ...]

    def args(self) -> list[str]:
        """The -f and --profile options, one -f per file, before any subcommand."""
        out: list[str] = []
        for path in self.files:
            out += ["-f", str(path)]
        for profile in self.profiles:
            out += ["--profile", profile]
        return out


def config_combinations() -> list[Combination]:
    """Base files plus each stack's files and profiles, for both shipped configs."""
    combos = []
    for config in CONFIGS:
        raw = yaml.safe_load(config.read_text())
        compose = raw.get("compose", {})
        directory = (config.parent / compose.get("directory", ".")).resolve()
        base = [directory / name for name in compose.get("files", [])]
        for stack, spec in raw["stacks"].items():
            files = tuple(base + [directory / name for name in spec.get("files", [])])
            profiles = tuple(spec.get("profiles", []))
            combos.append(Combination(f"{config.name}:{stack}", files, profiles))
    return combos


def make_combinations() -> list[Combination]:
    """The -f/--profile sets of every compose call `make -n` prints for each flow and stack."""
    combos = []
    for stack_dir in STACK_DIRS:
        rel = stack_dir.relative_to(REPO_ROOT)
        for flow in MAKE_FLOWS:
            result = run(["make", "-n", "--no-print-directory", flow, f"STACK_DIR={rel}"])
            assert result.returncode == 0, result.stderr
            for match in COMPOSE_CALL.finditer(result.stdout):
                words = shlex.split(match.group(1))
                pairs = list(itertools.pairwise(words))
                files = tuple(REPO_ROOT / value for opt, value in pairs if opt == "-f")
                profiles = tuple(value for opt, value in pairs if opt == "--profile")
                combos.append(Combination(f"make {flow} STACK_DIR={rel}", files, profiles))
    return combos


def resolved(combo: Combination) -> dict[str, Any]:
    """`docker compose config` of the combination, as JSON; fails the test on any error."""
    result = run(
        ["docker", "compose", "-p", unique_project(), *combo.args(), "config", "--format", "json"]
    )
    assert result.returncode == 0, f"{combo.origin}: {result.stderr}"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


ALL_COMBINATIONS = config_combinations() + make_combinations()


def test_every_flow_and_stack_is_covered() -> None:
    """The Makefile flows and both configs yield compose combinations for both stack dirs."""
    origins = {c.origin for c in ALL_COMBINATIONS}
    for flow in MAKE_FLOWS:
        for stack_dir in STACK_DIRS:
            assert f"make {flow} STACK_DIR={stack_dir.relative_to(REPO_ROOT)}" in origins
    assert {"devsup.yaml:skeleton", "devsup.yaml:fullstack", "demo.yaml:skeleton"} <= origins


def combo_id(combo: Combination) -> str:
    """Test id: who uses the combination, and its files."""
    return f"{combo.origin}[{'+'.join(path.name for path in combo.files)}]"


@pytest.mark.docker
@pytest.mark.parametrize("combo", ALL_COMBINATIONS, ids=combo_id)
def test_combination_resolves_with_local_ports(combo: Combination) -> None:
    """The combination passes `docker compose config` and publishes ports on 127.0.0.1 only."""
    services = resolved(combo)["services"]
    assert {"redpanda", "postgres"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{combo.origin}: {name} publishes {port}"


@pytest.mark.docker
@pytest.mark.parametrize("stack_dir", STACK_DIRS, ids=lambda p: p.name)
def test_layers_and_profiles(stack_dir: Path) -> None:
    """Base has no profiles; fullstack services need the profile; e2e adds only the runner."""
    base = Combination("base", (stack_dir / "docker-compose.yaml",), ())
    mono = Combination("mono", (*base.files, stack_dir / "docker-compose.monolith.yaml"), ())
    full = Combination("full", (*mono.files, stack_dir / "docker-compose.fullstack.yaml"), ())
    full_on = Combination("full+profile", full.files, ("fullstack",))
    e2e = Combination("e2e", (*mono.files, stack_dir / "docker-compose.e2e.yaml"), ())

    assert set(resolved(base)["services"]) == {"redpanda", "postgres"}
    assert set(resolved(mono)["services"]) == {"redpanda", "postgres", "platform"}
    assert set(resolved(full)["services"]) == {"redpanda", "postgres", "platform"}
    full_services = resolved(full_on)["services"]
    assert set(full_services) == {"redpanda", "postgres", "platform"} | FULLSTACK_ONLY
    for name in FULLSTACK_ONLY:
        assert full_services[name]["profiles"] == ["fullstack"]
    assert full_services["platform"]["labels"]["traefik.enable"] == "true"
    assert set(resolved(e2e)["services"]) == {"redpanda", "postgres", "platform", "e2e-runner"}
    for name, service in full_services.items():
        if name != "platform":
            assert "healthcheck" in service, f"{name} has no healthcheck"
    assert set(resolved(base)["volumes"]) >= {"postgres-data", "redpanda-data"}


@pytest.mark.docker
def test_real_stack_images_are_pinned() -> None:
    """The real stack names every upstream image with an explicit, non-latest tag."""
    combo = Combination(
        "real",
        tuple(REAL_STACK / f"docker-compose{layer}.yaml" for layer in LAYERS),
        ("fullstack",),
    )
    for name, service in resolved(combo)["services"].items():
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


@pytest.mark.docker
def test_demo_stack_never_pulls() -> None:
    """Every demo image is a local devsup-demo image that compose is told never to pull."""
    combo = Combination(
        "demo",
        tuple(DEMO_STACK / f"docker-compose{layer}.yaml" for layer in LAYERS),
        ("fullstack",),
    )
    for name, service in resolved(combo)["services"].items():
        assert service["image"].startswith("devsup-demo/"), name
        assert service["pull_policy"] == "never", name
