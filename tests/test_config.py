"""Config: locating, loading, validating, rendering and the JSON Schema, on real files."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from devsupervisor.config import (
    Config,
    find_config,
    load_config,
    model,
    parse_config,
    read_project_leniently,
    render_resolved,
)
from devsupervisor.config.schema import config_schema, render_schema
from devsupervisor.errors import ConfigError, ConfigNotFound

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "devsup.yaml"
DEMO = REPO / "config" / "demo.yaml"
SCHEMA_FILE = REPO / "config" / "devsup.schema.json"
MODELINE = "# yaml-language-server: $schema=./devsup.schema.json\n"

# A complete, valid config in the layout of the repository: config/ next to docker-compose/ and
# examples/. Tests copy it into a temporary tree and break one thing at a time.
VALID = """\
project: cornjacket
compose:
  directory: ../docker-compose
  files: [docker-compose.yaml]
stacks:
  skeleton:
    files: [docker-compose.monolith.yaml]
    profiles: []
    platform: binary
  fullstack:
    files: [docker-compose.monolith.yaml, docker-compose.fullstack.yaml]
    profiles: [fullstack]
    platform: container
default_stack: skeleton
platform:
  watch:
    paths: [../examples/platform-services]
  binary:
    workdir: ../examples/platform-services
    build: go build -o bin/platform ./cmd
    run: ./bin/platform
    ready: {http: "http://127.0.0.1:8080/healthz"}
  container:
    service: platform
"""
COMPOSE_FILES = (
    "docker-compose.yaml",
    "docker-compose.monolith.yaml",
    "docker-compose.fullstack.yaml",
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A project tree with the compose files and platform sources VALID refers to."""
    (tmp_path / "config").mkdir()
    (tmp_path / "docker-compose").mkdir()
    for name in COMPOSE_FILES:
        (tmp_path / "docker-compose" / name).write_text("services: {}\n")
    (tmp_path / "examples" / "platform-services").mkdir(parents=True)
    return tmp_path


def write(tree: Path, text: str) -> Path:
    path = tree / "config" / "devsup.yaml"
    path.write_text(text)
    return path


def error_of(tree: Path, text: str) -> str:
    """The one-line message of the ConfigError that loading `text` raises."""
    path = write(tree, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.one_line()
    assert "\n" not in message
    assert message == str(info.value)
    return message


def error_after(tree: Path, change: Callable[[dict[str, Any]], None]) -> ConfigError:
    """The ConfigError of VALID after `change` edits its data (written back as YAML)."""
    data = yaml.safe_load(VALID)
    change(data)
    path = write(tree, yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert "\n" not in error.one_line()
    assert error.file == str(path)
    return error


# --- locating -----------------------------------------------------------------------------------


def test_explicit_config_wins_over_everything(tmp_path: Path) -> None:
    """`--config` is used even when $DEVSUP_CONFIG and ./devsup.yaml exist."""
    for name in ("explicit.yaml", "env.yaml", "devsup.yaml"):
        (tmp_path / name).write_text("project: x\n")
    env = {"DEVSUP_CONFIG": str(tmp_path / "env.yaml")}
    assert find_config("explicit.yaml", tmp_path, env) == tmp_path / "explicit.yaml"


def test_env_var_wins_over_files(tmp_path: Path) -> None:
    """$DEVSUP_CONFIG comes before ./devsup.yaml."""
    (tmp_path / "env.yaml").write_text("project: x\n")
    (tmp_path / "devsup.yaml").write_text("project: x\n")
    assert find_config(None, tmp_path, {"DEVSUP_CONFIG": "env.yaml"}) == tmp_path / "env.yaml"


def test_file_order_is_cwd_then_config_dir_then_xdg(tmp_path: Path) -> None:
    """./devsup.yaml, then ./config/devsup.yaml, then $XDG_CONFIG_HOME/devsup/devsup.yaml."""
    cwd, xdg = tmp_path / "work", tmp_path / "xdg"
    (cwd / "config").mkdir(parents=True)
    (xdg / "devsup").mkdir(parents=True)
    env = {"XDG_CONFIG_HOME": str(xdg)}
    places = [xdg / "devsup" / "devsup.yaml", cwd / "config" / "devsup.yaml", cwd / "devsup.yaml"]
    for place in places:
        place.write_text("project: x\n")
        assert find_config(None, cwd, env) == place


def test_xdg_defaults_to_dot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $XDG_CONFIG_HOME the last place is ~/.config/devsup/devsup.yaml."""
    monkeypatch.setenv("HOME", str(tmp_path))
    place = tmp_path / ".config" / "devsup" / "devsup.yaml"
    place.parent.mkdir(parents=True)
    place.write_text("project: x\n")
    assert find_config(None, tmp_path / "elsewhere", {}) == place


def test_not_found_lists_every_place(tmp_path: Path) -> None:
    """When nothing is found the one-line message names every place looked."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with pytest.raises(ConfigNotFound) as info:
        find_config(None, tmp_path, env)
    message = info.value.one_line()
    assert "\n" not in message
    for place in (
        "--config",
        "$DEVSUP_CONFIG",
        str(tmp_path / "devsup.yaml"),
        str(tmp_path / "config" / "devsup.yaml"),
        str(tmp_path / "xdg" / "devsup" / "devsup.yaml"),
    ):
        assert place in message
    assert info.value.exit_code == 2


def test_named_config_that_is_missing_is_an_error(tmp_path: Path) -> None:
    """A missing --config or $DEVSUP_CONFIG file fails rather than falling back to another file."""
    (tmp_path / "devsup.yaml").write_text("project: x\n")
    with pytest.raises(ConfigNotFound, match=r"nope\.yaml \(from --config\)"):
        find_config("nope.yaml", tmp_path, {})
    with pytest.raises(ConfigNotFound, match=r"gone\.yaml \(from \$DEVSUP_CONFIG\)"):
        find_config(None, tmp_path, {"DEVSUP_CONFIG": str(tmp_path / "gone.yaml")})


# --- reading the project leniently --------------------------------------------------------------


def test_lenient_project_from_valid_file(tree: Path) -> None:
    """A valid config yields its project."""
    assert read_project_leniently(write(tree, VALID)) == "cornjacket"


def test_lenient_project_survives_invalid_config(tree: Path) -> None:
    """Unknown keys and wrong types elsewhere do not hide the project."""
    path = write(tree, "project: shop\nstacks: 12\nplatfrom: {}\n")
    assert read_project_leniently(path) == "shop"


def test_lenient_project_survives_broken_yaml(tree: Path) -> None:
    """A file YAML cannot parse (mid-edit) still yields a top-level project line."""
    path = write(tree, 'stacks:\n  a: [unclosed\nproject: "shop"  # the name\nplatform:\n\tx\n')
    with pytest.raises(ConfigError):
        load_config(path)
    assert read_project_leniently(path) == "shop"


@pytest.mark.parametrize(
    "text",
    [
        "stacks: {}\n",  # no project at all
        "project: ../../etc\n",  # unsafe for a socket path
        "project: [a\n  project: nested\n",  # broken, and no top-level line
    ],
)
def test_lenient_project_none_when_unusable(tree: Path, text: str) -> None:
    """No project, an unsafe one, or only an indented one gives None."""
    assert read_project_leniently(write(tree, text)) is None


def test_lenient_project_missing_file(tmp_path: Path) -> None:
    """A file that does not exist gives None, not an exception."""
    assert read_project_leniently(tmp_path / "absent.yaml") is None


# --- loading valid configs ----------------------------------------------------------------------


def test_valid_config_resolves_paths_against_the_config_file(tree: Path) -> None:
    """Relative paths become absolute, taken from the config file's directory, not the cwd."""
    config = load_config(write(tree, VALID))
    sources = (tree / "examples" / "platform-services").resolve()
    assert config.compose.directory == (tree / "docker-compose").resolve()
    assert config.platform.watch.paths == (sources,)
    assert config.platform.binary is not None
    assert config.platform.binary.workdir == sources
    assert config.source == tree / "config" / "devsup.yaml"
    assert config.compose_files("fullstack") == tuple(
        (tree / "docker-compose").resolve() / name for name in COMPOSE_FILES
    )


def test_defaults_match_the_contract(tree: Path) -> None:
    """Omitted keys take PRODUCT.md's defaults; default_stack is the first stack."""
    path = write(
        tree,
        "project: p\n"
        "stacks: {second: {}, first: {}}\n"
        "platform:\n"
        "  watch: {paths: [..]}\n"
        "  binary: {workdir: .., build: make, run: ./app}\n",
    )
    config = load_config(path)
    assert config.default_stack == "second"
    assert config.stacks["first"] == model.StackConfig(name="first")
    assert config.compose.files == ("docker-compose.yaml",)
    assert config.compose.directory == (tree / "docker-compose").resolve()
    watch = config.platform.watch
    assert watch.debounce == 0.1
    assert watch.include == ("**/*.go", "go.mod", "go.sum")
    assert watch.ignore == ("**/*_test.go", "bin/**")
    binary = config.platform.binary
    assert binary is not None
    assert (binary.stop_timeout, binary.stop_signal) == (5.0, signal.SIGTERM)
    assert binary.env == {}
    assert binary.ready is None
    assert config.platform.container is None
    assert config.platform.restart_on == ()
    deps = config.dependencies
    assert deps.restart_unhealthy is True
    assert (deps.backoff.initial, deps.backoff.max) == (1.0, 30.0)
    assert (deps.give_up_after.restarts, deps.give_up_after.within) == (5, 300.0)
    assert config.on_exit == "keep"
    # The model's own defaults (for configs built in code) agree with the loader's.
    assert deps == model.DependenciesConfig()
    assert watch == model.WatchConfig(paths=watch.paths)
    assert binary == model.BinaryConfig(workdir=binary.workdir, build="make", run="./app")


def test_ready_timeout_default_and_kinds(tree: Path) -> None:
    """ready takes http, tcp or log with a 30 s timeout unless given."""
    for ready, expected in [
        (
            '{http: "https://localhost/healthz"}',
            model.ReadyCheck(http="https://localhost/healthz"),
        ),
        (
            '{tcp: "127.0.0.1:8080", timeout: 2}',
            model.ReadyCheck(tcp="127.0.0.1:8080", timeout=2.0),
        ),
        ('{log: "listening on .*"}', model.ReadyCheck(log="listening on .*", timeout=30.0)),
    ]:
        config = load_config(
            write(tree, VALID.replace('{http: "http://127.0.0.1:8080/healthz"}', ready))
        )
        assert config.platform.binary is not None
        assert config.platform.binary.ready == expected


def test_short_signal_name_is_accepted(tree: Path) -> None:
    """stop_signal accepts INT as well as SIGINT."""
    text = VALID.replace(
        "    run: ./bin/platform\n", "    run: ./bin/platform\n    stop_signal: INT\n"
    )
    config = load_config(write(tree, text))
    assert config.platform.binary is not None
    assert config.platform.binary.stop_signal is signal.SIGINT


def test_platform_alone_needs_no_compose_directory(tmp_path: Path) -> None:
    """With no compose files anywhere the compose directory need not exist."""
    (tmp_path / "src").mkdir()
    path = tmp_path / "devsup.yaml"
    path.write_text(
        "project: solo\ncompose: {files: []}\nstacks: {only: {}}\n"
        "platform:\n  watch: {paths: [src]}\n  binary: {workdir: src, build: make, run: ./app}\n"
    )
    config = load_config(path)
    assert config.compose_files("only") == ()


def test_yaml_anchors_and_merge_keys_work(tree: Path) -> None:
    """A stack may reuse another's settings with `<<: *anchor` and override some of them."""
    text = VALID.replace("  skeleton:\n", "  skeleton: &base\n").replace(
        "default_stack: skeleton\n",
        "  copy:\n    <<: *base\n    profiles: [extra]\ndefault_stack: skeleton\n",
    )
    config = load_config(write(tree, text))
    assert config.stacks["copy"].files == config.stacks["skeleton"].files
    assert config.stacks["copy"].profiles == ("extra",)


def test_render_is_resolved_and_loads_back(tree: Path) -> None:
    """The rendered config has absolute paths and defaults, and loads back into an equal Config."""
    config = load_config(write(tree, VALID))
    text = render_resolved(config)
    assert text.startswith(f"# resolved from {config.source}\n")
    assert f"directory: {(tree / 'docker-compose').resolve()}" in text
    assert "stop_timeout: 5.0" in text
    assert "give_up_after:" in text
    again = tree / "elsewhere" / "resolved.yaml"
    again.parent.mkdir()
    again.write_text(text)
    reloaded = load_config(again)
    assert reloaded == Config(**{**config.__dict__, "source": again})


# --- errors: exact shape ------------------------------------------------------------------------


def test_unknown_top_level_key_exact_message(tree: Path) -> None:
    """A misspelt top-level key: file, line, column, key and a did-you-mean on one line."""
    path = write(tree, VALID)
    message = error_of(tree, VALID + "on_exti: down\n")
    line = VALID.count("\n") + 1
    assert message == f"{path}:{line}:1: on_exti: unknown key (did you mean 'on_exit'?)"


def test_unknown_nested_key_exact_message(tree: Path) -> None:
    """A misspelt key deep inside platform.binary names its full path."""
    message = error_of(
        tree, VALID.replace("    run: ./bin/platform\n", "    run: x\n    stop_timout: 5\n")
    )
    line = VALID.splitlines().index("    run: ./bin/platform") + 2
    expected = "platform.binary.stop_timout: unknown key (did you mean 'stop_timeout'?)"
    assert message == f"{tree / 'config' / 'devsup.yaml'}:{line}:5: {expected}"


def test_unknown_key_in_a_stack(tree: Path) -> None:
    """A misspelt key in a stack names the stack in its path."""
    message = error_of(tree, VALID.replace("    profiles: [fullstack]", "    profils: [fullstack]"))
    line = VALID.splitlines().index("    profiles: [fullstack]") + 1
    assert message.endswith(
        f":{line}:5: stacks.fullstack.profils: unknown key (did you mean 'profiles'?)"
    )


def test_unknown_key_without_close_match_lists_the_known_ones(tree: Path) -> None:
    """With nothing close, the message lists the keys that are allowed there."""
    message = error_of(tree, VALID + "dependencies: {zzz: 1}\n")
    assert message.endswith(
        "dependencies.zzz: unknown key (expected one of: restart_unhealthy, backoff, give_up_after)"
    )


def test_wrong_type_exact_message(tree: Path) -> None:
    """A wrong type names the expected type and the bad value, at the key's line."""
    message = error_of(tree, VALID + "dependencies:\n  restart_unhealthy: sometimes\n")
    line = VALID.count("\n") + 2
    assert message == (
        f"{tree / 'config' / 'devsup.yaml'}:{line}:3: dependencies.restart_unhealthy: "
        "expected true or false, got 'sometimes'"
    )


def test_duration_with_unit_exact_message(tree: Path) -> None:
    """A duration written as "5s" is rejected with the number to write instead."""
    message = error_of(
        tree, VALID.replace("    run: ./bin/platform\n", '    run: x\n    stop_timeout: "500ms"\n')
    )
    assert message.endswith(
        "platform.binary.stop_timeout: expected a number of seconds, got '500ms' "
        "(durations are plain numbers of seconds: write 0.5)"
    )


def test_bad_yaml_reports_line_and_column(tree: Path) -> None:
    """Text that is not YAML reports the line and column where parsing failed."""
    message = error_of(tree, "project: p\nstacks:\n  a: b: c\n")
    problem = "invalid YAML: mapping values are not allowed here"
    assert message == f"{tree / 'config' / 'devsup.yaml'}:3:7: {problem}"


def test_tab_indentation_gets_a_hint(tree: Path) -> None:
    """A tab in the indentation says so."""
    message = error_of(tree, "project: p\nstacks:\n\ta: {}\n")
    assert re.search(r":3:1: invalid YAML: .*'\\t'.*\(indent with spaces, not tabs\)$", message)


def test_empty_file_is_an_error(tree: Path) -> None:
    """An empty file says what a config needs."""
    message = error_of(tree, "# nothing yet\n")
    assert message.endswith(
        "devsup.yaml: the config is empty; it needs at least project, stacks and platform"
    )


def test_unknown_default_stack_has_did_you_mean(tree: Path) -> None:
    """default_stack naming no stack suggests the closest and lists the stacks."""
    message = error_of(tree, VALID.replace("default_stack: skeleton", "default_stack: fulstack"))
    line = VALID.splitlines().index("default_stack: skeleton") + 1
    assert message.endswith(
        f":{line}:1: default_stack: no stack named 'fulstack' (did you mean 'fullstack'?); "
        "stacks: skeleton, fullstack"
    )


def test_missing_compose_file_of_a_stack(tree: Path) -> None:
    """A stack's compose file that does not exist is named with its absolute path."""
    (tree / "docker-compose" / "docker-compose.fullstack.yaml").unlink()
    message = error_of(tree, VALID)
    line = VALID.splitlines().index("  fullstack:") + 2
    missing = (tree / "docker-compose").resolve() / "docker-compose.fullstack.yaml"
    assert message.endswith(
        f":{line}:43: stacks.fullstack.files[1]: no such compose file: {missing}"
    )


# --- errors: every class ------------------------------------------------------------------------


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]

    return change


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (_drop("project"), "project", "required key is missing"),
        (_drop("platform.watch"), "platform.watch", "required key is missing"),
        (_set("project", "Corn Jacket"), "project", "'Corn Jacket' is not a project name"),
        (_set("project", 7), "project", "expected a string, got 7"),
        (_set("stacks", {}), "stacks", "needs at least 1 entry"),
        (_set("stacks", ["a"]), "stacks", "expected a mapping, got a list"),
        (
            _set("stacks.skeleton.platform", "binery"),
            "stacks.skeleton.platform",
            "expected binary or container, got 'binery' (did you mean 'binary'?)",
        ),
        (
            _set("stacks.skeleton.files", "a.yaml"),
            "stacks.skeleton.files",
            "expected a list of strings, got 'a.yaml'",
        ),
        (
            _set("stacks.skeleton.profiles", [1]),
            "stacks.skeleton.profiles[0]",
            "expected a string, got 1",
        ),
        (
            _set("platform.watch.debounce", "fast"),
            "platform.watch.debounce",
            "expected a number of seconds, got 'fast' "
            "(durations are plain numbers of seconds, e.g. 5 or 0.5)",
        ),
        (_set("platform.watch.debounce", "5s"), "platform.watch.debounce", "write 5)"),
        (
            _set("platform.watch.debounce", -1),
            "platform.watch.debounce",
            "must not be negative, got -1",
        ),
        (
            _set("platform.watch.debounce", True),
            "platform.watch.debounce",
            "expected a number of seconds, got true",
        ),
        (_set("platform.watch.paths", []), "platform.watch.paths", "needs at least 1 item(s)"),
        (
            _set("platform.watch.paths", ["../nowhere"]),
            "platform.watch.paths[0]",
            "no such file or directory: ",
        ),
        (
            _set("platform.binary.workdir", "../nowhere"),
            "platform.binary.workdir",
            "no such directory: ",
        ),
        (
            _set("platform.binary.workdir", "../docker-compose/docker-compose.yaml"),
            "platform.binary.workdir",
            "not a directory: ",
        ),
        (_set("compose.directory", "../nowhere"), "compose.directory", "no such directory: "),
        (_set("compose.files", ["absent.yaml"]), "compose.files[0]", "no such compose file: "),
        (
            _drop("platform.binary"),
            "platform.binary",
            "required because stack 'skeleton' uses platform: binary",
        ),
        (
            _drop("platform.container"),
            "platform.container",
            "required because stack 'fullstack' uses platform: container",
        ),
        (_set("platform.container.prebuild", "make"), None, None),  # valid: binary is present
        (
            _set("platform.binary.ready", {}),
            "platform.binary.ready",
            "needs exactly one of: http, tcp, log",
        ),
        (
            _set("platform.binary.ready", {"http": "http://x", "log": "up"}),
            "platform.binary.ready",
            "only one of http, tcp, log, notify may be given, got http, log",
        ),
        (
            _set("platform.binary.ready", {"http": "localhost:8080"}),
            "platform.binary.ready.http",
            "'localhost:8080' is not an http:// or https:// URL",
        ),
        (
            _set("platform.binary.ready", {"tcp": "8080"}),
            "platform.binary.ready.tcp",
            "'8080' is not host:port",
        ),
        (
            _set("platform.binary.ready", {"tcp": "localhost:99999"}),
            "platform.binary.ready.tcp",
            "port 99999 is out of range 1-65535",
        ),
        (
            _set("platform.binary.ready", {"log": "ready ("}),
            "platform.binary.ready.log",
            "not a valid regular expression: missing ), unterminated subpattern at position 6",
        ),
        (
            _set("platform.binary.ready", {"tcp": "h:1", "timeout": 0}),
            "platform.binary.ready.timeout",
            "must be greater than 0, got 0",
        ),
        (
            _set("platform.binary.stop_signal", "SIGTREM"),
            "platform.binary.stop_signal",
            "expected a signal name such as SIGTERM or TERM, got 'SIGTREM' "
            "(did you mean 'SIGTERM'?)",
        ),
        (
            _set("platform.binary.env", {"PORT": True}),
            "platform.binary.env.PORT",
            "expected a string, got true (quote it)",
        ),
        (
            _set("platform.binary.env", {"BAD-NAME": "1"}),
            "platform.binary.env.BAD-NAME",
            "not a valid environment variable name",
        ),
        (_set("platform.binary.build", ""), "platform.binary.build", "must not be empty"),
        (
            _set("platform.restart_on", "postgres"),
            "platform.restart_on",
            "expected a list of strings, got 'postgres'",
        ),
        (_set("on_exit", "stop"), "on_exit", "expected keep or down, got 'stop'"),
        (
            _set("dependencies.backoff", {"initial": 60}),
            "dependencies.backoff.initial",
            "must not exceed backoff.max (60 > 30)",
        ),
        (
            _set("dependencies.give_up_after", {"restarts": 0}),
            "dependencies.give_up_after.restarts",
            "must be at least 1, got 0",
        ),
        (
            _set("dependencies.give_up_after", {"restarts": 2.5}),
            "dependencies.give_up_after.restarts",
            "expected an integer, got 2.5",
        ),
        (
            _set("platform.container.service", "bad name"),
            "platform.container.service",
            "'bad name' is not a compose service name",
        ),
    ],
)
def test_each_error_class_names_file_key_and_problem(
    tree: Path, change: Callable[[dict[str, Any]], None], key: str | None, problem: str | None
) -> None:
    """Every kind of bad config fails with one line: file, line, key path, problem."""
    if key is None:
        data = yaml.safe_load(VALID)
        change(data)
        load_config(write(tree, yaml.safe_dump(data)))
        return
    error = error_after(tree, change)
    assert error.key == key
    assert problem is not None and problem in error.problem
    # Only a missing top-level key has no enclosing key to point at.
    assert error.line is not None or len(key.split(".")) == 1
    assert re.fullmatch(rf".+/devsup\.yaml(:\d+:\d+)?: {re.escape(key)}: .+", error.one_line())


def test_prebuild_without_binary_section(tree: Path) -> None:
    """container.prebuild runs in binary.workdir, so it needs platform.binary."""
    text = (
        "project: p\ncompose: {files: []}\nstacks: {c: {platform: container}}\n"
        "platform:\n  watch: {paths: [.]}\n  container: {prebuild: make}\n"
    )
    message = error_of(tree, text)
    assert message.endswith(
        ":6:15: platform.container.prebuild: runs in platform.binary.workdir, "
        "so platform.binary is required"
    )


def test_duplicate_keys_are_errors(tree: Path) -> None:
    """A key given twice in one mapping points at the second one."""
    message = error_of(tree, VALID + "on_exit: keep\non_exit: down\n")
    line = VALID.count("\n") + 2
    assert message.endswith(f":{line}:1: on_exit: duplicate key (first at line {line - 1})")


def test_top_level_must_be_a_mapping(tree: Path) -> None:
    """A list at the top level is a type error without a key path."""
    assert error_of(tree, "- project\n").endswith("devsup.yaml: expected a mapping, got a list")


def test_unreadable_file(tmp_path: Path) -> None:
    """A path that is a directory is reported as unreadable, not as a traceback."""
    with pytest.raises(ConfigError, match="cannot read the config file: Is a directory"):
        load_config(tmp_path)


def test_parse_config_without_marks_has_no_line(tree: Path) -> None:
    """parse_config on plain data still names the file and key, just without a line."""
    data = yaml.safe_load(VALID)
    data["on_exit"] = "later"
    with pytest.raises(ConfigError) as info:
        parse_config(data, tree / "config" / "devsup.yaml")
    assert info.value.one_line() == (
        f"{tree / 'config' / 'devsup.yaml'}: on_exit: expected keep or down, got 'later'"
    )


# --- the shipped config and the schema ----------------------------------------------------------


def test_schema_file_is_generated_from_the_spec() -> None:
    """config/devsup.schema.json is exactly what `python3 -m devsupervisor.config.schema` prints."""
    assert SCHEMA_FILE.read_text() == render_schema(), (
        "schema drifted: run `python3 -m devsupervisor.config.schema > config/devsup.schema.json`"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    """The generated schema is itself a valid JSON Schema."""
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_shipped_configs_reference_the_schema_and_validate() -> None:
    """Every shipped config names the schema in its modeline and satisfies it."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    shipped = sorted((REPO / "config").glob("*.yaml"))
    assert SHIPPED in shipped
    for path in shipped:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], path
    # Editors (yaml-language-server) complete and check a file that names its schema this way.
    missing = [p.name for p in shipped if not p.read_text().startswith(MODELINE)]
    assert missing == [], f"add {MODELINE.strip()!r} as the first line of {missing}"


def test_demo_config_loads_where_it_is() -> None:
    """config/demo.yaml refers to files in this repository, so it loads in place."""
    config = load_config(DEMO)
    assert config.project == "devsup-demo"
    assert config.compose.directory == (REPO / "examples" / "demo-stack").resolve()


def test_shipped_config_loads_where_it_is() -> None:
    """config/devsup.yaml loads against the compose files and sources of this repository."""
    config = load_config(SHIPPED)
    assert config.project == "cornjacket"
    assert list(config.stacks) == ["skeleton", "fullstack"]
    assert config.compose.directory == (REPO / "docker-compose").resolve()
    assert config.platform.watch.paths == ((REPO / "examples" / "platform-services").resolve(),)
    assert config.platform.container == model.ContainerConfig(
        service="platform", prebuild="CGO_ENABLED=0 go build -o bin/platform ./cmd"
    )


@pytest.mark.parametrize(
    "change",
    [
        _set("platfrom", {}),
        _set("platform.binary.stop_timout", 5),
        _set("platform.watch.debounce", "5s"),
        _set("stacks.skeleton.platform", "vm"),
        _set("platform.binary.ready", {"http": "http://x", "tcp": "x:1"}),
        _set("project", "Upper"),
        _drop("stacks"),
        _set("dependencies.give_up_after", {"restarts": 0}),
    ],
)
def test_bad_configs_are_rejected_by_schema_and_loader(
    tree: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    """Structural mistakes fail both the JSON Schema and the loader."""
    error_after(tree, change)
    data = yaml.safe_load(VALID)
    change(data)
    validator = jsonschema.Draft202012Validator(config_schema())
    assert list(validator.iter_errors(data)), "schema accepted a config the loader rejects"
