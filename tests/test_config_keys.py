"""Config keys of the next capabilities: instance, ports, dashboard, engine, listen, notify,
timeouts; `${NAME}` port references and their substitution; the yaml-free identity reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from devsupervisor.config import (
    Config,
    load_config,
    model,
    read_identity,
    render_resolved,
    substitute_ports,
)
from devsupervisor.config.schema import config_schema
from devsupervisor.errors import ConfigError

BASE = """\
project: shop
compose: {files: []}
stacks: {dev: {}}
platform:
  watch: {paths: [src]}
  binary:
    workdir: src
    build: go build -o bin/app ./cmd
    run: exec ./bin/app
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory with the `src` tree BASE refers to."""
    (tmp_path / "src").mkdir()
    return tmp_path


def load(tree: Path, text: str) -> Config:
    path = tree / "devsup.yaml"
    path.write_text(text)
    return load_config(path)


def error_of(tree: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tree, text)
    assert "\n" not in info.value.one_line()
    return info.value.one_line()


def binary_of(config: Config) -> model.BinaryConfig:
    assert config.platform.binary is not None
    return config.platform.binary


def test_new_keys_default_to_todays_behaviour(tree: Path) -> None:
    """Without the new keys: no instance, no ports, dashboard on a free port, the usual engine."""
    config = load(tree, BASE)
    assert config.instance is None
    assert config.ports == {}
    assert config.dashboard == model.DashboardConfig(port=0)
    assert config.engine is None
    binary = binary_of(config)
    assert binary.listen == ()
    assert config.platform.build_timeout == 600.0
    assert config.compose.timeout == 300.0


def test_all_new_keys_load_and_render_back(tree: Path) -> None:
    """Every new key loads, and the resolved rendering loads back into an equal Config."""
    text = BASE.replace(
        "    run: exec ./bin/app\n",
        "    run: exec ./bin/app --port ${API_PORT}\n"
        '    env: {ADDR: "127.0.0.1:${API_PORT}", DB: "${DB_PORT}"}\n'
        '    listen: ["127.0.0.1:${API_PORT}", "unix:run/app.sock"]\n'
        "    ready: {notify: true, timeout: 10}\n"
        "  build_timeout: 120\n",
    ) + (
        "instance: shop-feature\n"
        "ports: {API_PORT: 8080, DB_PORT: 5432}\n"
        "dashboard: {port: 7000}\n"
        "engine: {host: 'ssh://dev@build-box:2222'}\n"
    )
    text = text.replace("compose: {files: []}", "compose: {files: [], timeout: 60}")
    config = load(tree, text)
    assert config.instance == "shop-feature"
    assert config.ports == {"API_PORT": 8080, "DB_PORT": 5432}
    assert config.dashboard == model.DashboardConfig(port=7000)
    assert config.engine == model.EngineConfig(host="ssh://dev@build-box:2222")
    binary = binary_of(config)
    assert binary.listen == ("127.0.0.1:${API_PORT}", f"unix:{tree.resolve() / 'run/app.sock'}")
    assert binary.ready == model.ReadyCheck(notify=True, timeout=10.0)
    assert (binary.ready.kind, binary.ready.target) == ("notify", "")
    assert (config.platform.build_timeout, config.compose.timeout) == (120.0, 60.0)
    rendered = render_resolved(config)
    again = tree / "again.yaml"
    again.write_text(rendered)
    assert load_config(again) == Config(**{**config.__dict__, "source": again})
    schema_errors = list(
        jsonschema.Draft202012Validator(config_schema()).iter_errors(yaml.safe_load(text))
    )
    assert schema_errors == []


def test_dashboard_false_turns_it_off_and_renders_back(tree: Path) -> None:
    """`dashboard: false` loads as False and is rendered as `dashboard: false`."""
    config = load(tree, BASE + "dashboard: false\n")
    assert config.dashboard is False
    assert "\ndashboard: false\n" in render_resolved(config)


@pytest.mark.parametrize(
    ("extra", "ending"),
    [
        ("dashboard: true\n", "dashboard: expected a mapping or false, got true"),
        ("dashboard: {prot: 1}\n", "dashboard.prot: unknown key (did you mean 'port'?)"),
        ("dashboard: {port: 70000}\n", "dashboard.port: must be between 0 and 65535, got 70000"),
        ("ports: {api-port: 80}\n", "ports.api-port: 'api-port' is not a valid environment var"),
        ("ports: {API: 0}\n", "ports.API: must be between 1 and 65535, got 0"),
        ("ports: {API: '80'}\n", "ports.API: expected an integer, got '80'"),
        ("ports: [80]\n", "ports: expected a mapping, got a list"),
        ("instance: Feature X\n", "instance: 'Feature X' is not a project name"),
        ("engine: {host: 'ssh:/box'}\n", "engine.host: 'ssh:/box' is not an engine address"),
        ("engine: {host: 'http://box:2375'}\n", "is not an engine address"),
        ("engine: {}\n", "engine.host: required key is missing"),
    ],
)
def test_bad_new_top_level_keys(tree: Path, extra: str, ending: str) -> None:
    """Each bad value of a new top-level key names the key and the problem."""
    message = error_of(tree, BASE + extra)
    assert ending in message


@pytest.mark.parametrize(
    "host",
    [
        "ssh://dev@box",
        "ssh://dev@box:2222",
        "ssh://box",
        "unix:///run/docker.sock",
        "tcp://10.0.0.2:2375",
    ],
)
def test_engine_host_forms(tree: Path, host: str) -> None:
    """ssh://[USER@]HOST[:PORT], unix:///PATH and tcp://HOST:PORT are accepted."""
    assert load(tree, BASE + f"engine: {{host: '{host}'}}\n").engine == model.EngineConfig(
        host=host
    )


def binary_extra(lines: str) -> str:
    return BASE + "".join(f"    {line}\n" for line in lines.splitlines())


@pytest.mark.parametrize(
    ("lines", "ending"),
    [
        ("listen: ['8080']", "platform.binary.listen[0]: '8080' is not HOST:PORT or unix:PATH"),
        ("listen: ['127.0.0.1:0']", "platform.binary.listen[0]: port 0 is out of range 1-65535"),
        ("listen: ['unix:']", "platform.binary.listen[0]: unix: needs a socket path"),
        (f"listen: ['unix:/{'x' * 120}']", "socket path is longer than 107 bytes"),
        (
            "listen: ['127.0.0.1:${API}']",
            "platform.binary.listen[0]: ${API} is not a port of the ports section",
        ),
        ("ready: {notify: false}", "platform.binary.ready.notify: expected true, got false"),
        (
            "ready: {notify: true, log: up}",
            "only one of http, tcp, log, notify may be given, got log, notify",
        ),
        ("ready: {tcp: '127.0.0.1:${PORT}'}", "ready.tcp: ${PORT} is not a port of the ports"),
        ("ready: {http: 'http://h:${PORT}/'}", "ready.http: ${PORT} is not a port of the ports"),
    ],
)
def test_bad_listen_and_ready(tree: Path, lines: str, ending: str) -> None:
    """Listen addresses and readiness are validated, including their `${NAME}` references."""
    assert ending in error_of(tree, binary_extra(lines))


def test_port_reference_did_you_mean(tree: Path) -> None:
    """A misspelt port name in a listen address suggests the declared one."""
    text = binary_extra("listen: ['127.0.0.1:${API_PROT}']") + "ports: {API_PORT: 8080}\n"
    assert error_of(tree, text).endswith(
        "is not a port of the ports section (did you mean 'API_PORT'?)"
    )


def test_timeouts_are_durations(tree: Path) -> None:
    """build_timeout and compose.timeout take seconds, with the usual hint for units."""
    text = BASE + "  build_timeout: 10m\n"
    assert error_of(tree, text).endswith(
        "platform.build_timeout: expected a number of seconds, got '10m' "
        "(durations are plain numbers of seconds: write 600)"
    )
    text = BASE.replace("compose: {files: []}", "compose: {files: [], timeout: 0}")
    assert error_of(tree, text).endswith("compose.timeout: must be greater than 0, got 0")


def test_shell_strings_are_not_parsed(tree: Path) -> None:
    """An unbalanced quote or a shell construct is the shell's business at run time, not ours."""
    config = load(tree, BASE.replace("run: exec ./bin/app", """run: echo "unbalanced"""))
    assert binary_of(config).run == 'echo "unbalanced'
    config = load(tree, BASE.replace("run: exec ./bin/app", "run: '! grep -q X f && exec app'"))
    assert binary_of(config).run == "! grep -q X f && exec app"


def test_substitute_ports_replaces_exactly_the_declared_strings(tree: Path) -> None:
    """run, build, env values, ready and listen get the ports; other strings and names stay."""
    text = (
        BASE.replace("build: go build -o bin/app ./cmd", "build: make PORT=${API_PORT}")
        .replace(
            "    run: exec ./bin/app\n",
            "    run: exec ./bin/app -p ${API_PORT} -h ${HOME}\n"
            "    env: {ADDR: ':${API_PORT}', KEEP: '${OTHER}'}\n"
            "    listen: ['127.0.0.1:${API_PORT}']\n"
            "    ready: {http: 'http://127.0.0.1:${API_PORT}/healthz'}\n",
        )
        .replace("stacks: {dev: {}}", "stacks: {dev: {}, box: {platform: container}}")
        + "  container: {prebuild: 'echo ${API_PORT}'}\nports: {API_PORT: 8080}\n"
    )
    config = load(tree, text)
    out = substitute_ports(config, {"API_PORT": 9001})
    binary = binary_of(out)
    assert binary.build == "make PORT=9001"
    assert binary.run == "exec ./bin/app -p 9001 -h ${HOME}"
    assert binary.env == {"ADDR": ":9001", "KEEP": "${OTHER}"}
    assert binary.listen == ("127.0.0.1:9001",)
    assert binary.ready == model.ReadyCheck(http="http://127.0.0.1:9001/healthz")
    # Not listed by the contract: prebuild gets the ports through its environment instead.
    assert out.platform.container == config.platform.container
    assert out.ports == config.ports
    assert config.platform.binary is not None and "${API_PORT}" in config.platform.binary.run
    assert substitute_ports(config, {}) == config


# --- identity without YAML ---------------------------------------------------------------------


def test_identity_reads_project_and_instance(tmp_path: Path) -> None:
    """Top-level project and instance lines, quoted or commented, are read."""
    path = tmp_path / "devsup.yaml"
    path.write_text("# c\nproject: 'shop'  # name\nstacks:\n  instance: nested\ninstance: shop-x\n")
    assert read_identity(path) == ("shop", "shop-x")


def test_identity_survives_a_config_mid_edit(tmp_path: Path) -> None:
    """Broken YAML, unknown keys and bad types elsewhere do not hide the names."""
    path = tmp_path / "devsup.yaml"
    path.write_text("stacks:\n  a: [unclosed\nproject: shop\r\nplatform:\n\tx\ninstance: [a\n")
    assert read_identity(path) == ("shop", None)


def test_identity_of_missing_or_binary_file(tmp_path: Path) -> None:
    """An absent file or garbage gives (None, None), never an exception."""
    assert read_identity(tmp_path / "absent.yaml") == (None, None)
    assert read_identity(tmp_path) == (None, None)
    garbage = tmp_path / "g.yaml"
    garbage.write_bytes(b"\xff\x00project: ok\n")
    assert read_identity(garbage) == (None, None)


def test_identity_and_locate_import_no_yaml_logging_or_asyncio() -> None:
    """Client commands can find the config and its names without yaml, structlog or asyncio."""
    code = (
        "import sys, json\n"
        "import devsupervisor.config.identity, devsupervisor.config.locate\n"
        "from devsupervisor.config import find_config, read_identity\n"
        "print(json.dumps([m for m in ('yaml', 'structlog', 'asyncio') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_log_ready_with_port_reference(tree: Path) -> None:
    """A readiness regex may name a port; it is a valid regex before and after substitution."""
    config = load(
        tree, binary_extra("ready: {log: 'listening on :${API}$'}") + "ports: {API: 80}\n"
    )
    out = substitute_ports(config, {"API": 8081})
    assert binary_of(out).ready == model.ReadyCheck(log="listening on :8081$")


def test_identity_ignores_a_byte_order_mark(tmp_path: Path) -> None:
    """A UTF-8 BOM before the first line does not hide `project:`."""
    path = tmp_path / "devsup.yaml"
    path.write_text("project: bom\n", encoding="utf-8-sig")
    assert read_identity(path) == ("bom", None)
