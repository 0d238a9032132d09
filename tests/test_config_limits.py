"""Config parsing of hostile input is bounded: size, nesting depth, alias expansion, value count.

Each case ran for seconds to minutes (or crashed with RecursionError) before the limits existed.
The timeout marker is only a safety net; the assertions are on the one-line error.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devsupervisor.config import load_config
from devsupervisor.config.load import MAX_CONFIG_BYTES
from devsupervisor.config.yamlmarks import MAX_DEPTH, MAX_VALUES
from devsupervisor.errors import ConfigError

pytestmark = pytest.mark.timeout(10)


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "devsup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.one_line()
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


def alias_bomb(levels: int) -> str:
    lines = ["project: bomb", 'x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_stops_at_the_expansion_limit(tmp_path: Path) -> None:
    """A few hundred bytes of nested aliases fail with the alias expansion limit, at the alias."""
    text = alias_bomb(10)
    assert len(text) < 1000
    message = error_of(tmp_path, text)
    assert re.search(
        rf":\d+:\d+: YAML aliases expand the config to more than {MAX_VALUES} values "
        r"\(alias expansion limit\)$",
        message,
    )


def test_merge_key_bomb_stops_at_the_expansion_limit(tmp_path: Path) -> None:
    """Doubling `<<:` merges count as alias expansion too."""
    lines = ["project: m", "m0: &m0 {a: 1, b: 2}"]
    for i in range(1, 40):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}")
    assert "(alias expansion limit)" in error_of(tmp_path, "\n".join(lines) + "\n")


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path) -> None:
    """A 5,000-deep list fails with the depth limit instead of a RecursionError traceback."""
    message = error_of(tmp_path, "project: deep\nstacks: " + "[" * 5000 + "]" * 5000 + "\n")
    assert message.endswith(f": nesting deeper than {MAX_DEPTH} levels (depth limit)")
    assert re.search(r"devsup\.yaml:2:\d+: ", message)


def test_depth_through_chained_aliases_is_bounded(tmp_path: Path) -> None:
    """Aliases that each add a few levels cannot build a tree deeper than the limit."""
    lines = ["project: d"]
    for i in range(20):
        inner = f"*c{i - 1}" if i else "1"
        lines.append(f"c{i}: &c{i} " + "[" * 5 + inner + "]" * 5)
    assert "(depth limit)" in error_of(tmp_path, "\n".join(lines) + "\n")


def test_too_many_values_without_aliases(tmp_path: Path) -> None:
    """A flat list of 100,000 values within the size limit fails with the value count limit."""
    text = "project: x\na: [" + ",".join(["1"] * 100_000) + "]\n"
    assert len(text) <= MAX_CONFIG_BYTES
    assert error_of(tmp_path, text).endswith("(value count limit)")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A 37 MB config fails at once with the size limit."""
    line = "      - " + "x" * 60 + "\n"
    text = "project: big\nstacks:\n  a:\n    profiles:\n" + line * (37 * 1024 * 1024 // len(line))
    message = error_of(tmp_path, text)
    assert message == (
        f"{tmp_path / 'devsup.yaml'}: the config file is larger than "
        f"{MAX_CONFIG_BYTES // 1024} KiB (size limit)"
    )


def test_alias_that_contains_itself(tmp_path: Path) -> None:
    """A recursive alias is reported at the alias."""
    message = error_of(tmp_path, "project: c\na: &a [1, *a]\n")
    assert message.endswith(":2:11: a YAML alias refers to a value that contains it")


def test_shared_alias_with_merge_used_twice_is_not_a_duplicate(tmp_path: Path) -> None:
    """A mapping with a merge key, used through an alias twice, keeps its own keys apart."""
    text = "project: p\nb: &b {x: 1}\nc: &c {<<: *b, x: 2}\nd: [*c, *c]\n"
    # Structure is fine; the loader stops at the first unknown key, not at a false duplicate.
    assert error_of(tmp_path, text).endswith(
        "b: unknown key (expected one of: project, instance,"
        " compose, stacks, default_stack, platform, "
        "dependencies, on_exit, ports, dashboard, engine)"
    )
