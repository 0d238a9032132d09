"""Read YAML into plain Python data plus the line and column of every key.

PyYAML forgets where values came from once it builds Python objects, so we walk its node graph
ourselves and record the mark of each mapping key and sequence item by key path. Errors can then
point at the offending line. Duplicate keys, which PyYAML silently lets the last one win, are
rejected here because they are almost always a paste mistake.
"""

from __future__ import annotations

import yaml

from devsupervisor.config.fields import Invalid, KeyPath

# (line, column), both 1-based as editors show them.
Position = tuple[int, int]
Marks = dict[KeyPath, Position]


class YamlSyntaxError(Exception):
    """The text is not YAML. Carries the 1-based position of the problem when PyYAML has one."""

    def __init__(self, problem: str, position: Position | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.position = position


def read_yaml(text: str) -> tuple[object, Marks]:
    """Parse one YAML document.

    Returns:
        The data (None for an empty document) and the position of every key by key path.

    Raises:
        YamlSyntaxError: the text is not valid YAML.
        Invalid: a duplicate or non-string key, or an alias that contains itself.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc) from exc
        except yaml.YAMLError as exc:
            raise YamlSyntaxError(f"invalid YAML: {exc}", None) from exc
        if node is None:
            return None, {}
        marks: Marks = {}
        return _Builder(loader, marks).build(node, ()), marks
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    words = [w for w in (exc.context, exc.problem) if w]
    problem = "invalid YAML: " + (", ".join(words) if words else "cannot parse")
    if "'\\t'" in problem:
        problem += " (indent with spaces, not tabs)"
    position = (mark.line + 1, mark.column + 1) if mark is not None else None
    return YamlSyntaxError(problem, position)


def _position(node: yaml.Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, marks: Marks) -> None:
        self._loader = loader
        self._marks = marks
        # Nodes being built right now: an alias back into one of them would recurse forever.
        self._active: set[int] = set()

    def build(self, node: yaml.Node, path: KeyPath) -> object:
        if isinstance(node, yaml.ScalarNode):
            return self._loader.construct_object(node, deep=True)
        if id(node) in self._active:
            raise Invalid(path, "a YAML alias refers to a value that contains it", _position(node))
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        raise Invalid(path, f"unsupported YAML node {node.tag}")

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[object]:
        items = []
        for index, child in enumerate(node.value):
            self._marks.setdefault((*path, index), _position(child))
            items.append(self.build(child, (*path, index)))
        return items

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, object]:
        # Keys written in this mapping, as opposed to those pulled in by a `<<: *anchor` merge,
        # which the mapping's own keys may override.
        own = {id(k) for k, _ in node.value}
        # Expands merge keys in place (merged pairs first), as PyYAML's own constructor does.
        self._loader.flatten_mapping(node)
        out: dict[str, object] = {}
        own_seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self._loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                shown = "null" if key is None else str(key)
                raise Invalid(
                    (*path, shown), "keys must be strings (quote it)", _position(key_node)
                )
            child = (*path, key)
            is_own = id(key_node) in own
            if is_own and key in own_seen:
                first = self._marks.get(child)
                where = f" (first at line {first[0]})" if first else ""
                raise Invalid(child, f"duplicate key{where}", _position(key_node))
            if is_own:
                own_seen.add(key)
                self._marks[child] = _position(key_node)
            else:
                self._marks.setdefault(child, _position(key_node))
            out[key] = self.build(value_node, child)
        return out
