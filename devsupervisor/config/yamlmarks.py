"""Read YAML into plain Python data plus the line and column of every key, within fixed limits.

PyYAML forgets where values came from once it builds Python objects, so we walk its node graph
ourselves and record the mark of each mapping key and sequence item by key path. Errors can then
point at the offending line. Duplicate keys, which PyYAML silently lets the last one win, are
rejected here because they are almost always a paste mistake.

A config is untrusted input (a file from a checkout, edited live), so parsing is bounded while
the node graph is composed, before anything is expanded: nesting depth (the composer and every
walk after it recurse), and the number of values counting each alias every time it is used (a
few hundred bytes of nested aliases otherwise expand to gigabytes). The file size is bounded by
the loader before the text reaches PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

from devsupervisor.config.invalid import Invalid, KeyPath

# (line, column), both 1-based as editors show them.
Position = tuple[int, int]
Marks = dict[KeyPath, Position]

# A devsup config nests five levels deep (platform.binary.ready.http); 32 leaves room for any
# hand-written structure and bounds recursion at a small fraction of Python's stack.
MAX_DEPTH = 32
# A full config holds a few hundred values. 5,000 leaves more than 10x room and bounds the
# pure-Python composer on hostile input (about 30 us a value) to well under 0.2 s.
MAX_VALUES = 5_000
_DEPTH_PROBLEM = f"nesting deeper than {MAX_DEPTH} levels (depth limit)"


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
        Invalid: a duplicate or non-string key, an alias that contains itself, or a limit
            (depth, values) exceeded.
    """
    loader = _BoundedLoader(text)
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
        try:
            # Constructing scalars and merge keys can fail too (`!!int x`, `<<: 5`).
            return _Builder(loader, marks).build(node, ()), marks
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc) from exc
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


def _event_position(event: yaml.Event) -> Position | None:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the depth and value limits enforced while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._values = 0
        self._depth = 0
        # Deepest level reached inside the node being composed: an anchor's height.
        self._reached = 0
        # Per anchored node: (values inside it, its height), for each use of an alias to it.
        self._anchored: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self._anchored:
                    raise Invalid(
                        (),
                        "a YAML alias refers to a value that contains it",
                        _event_position(event),
                    )
                values, height = self._anchored[id(target)]
                self._count(values, event, alias=True)
                self._deepen(self._depth + height, event)
            return super().compose_node(parent, index)
        self._count(1, event, alias=False)
        self._depth += 1
        self._deepen(self._depth, event)
        outer_reached, self._reached = self._reached, self._depth
        before = self._values
        try:
            node = super().compose_node(parent, index)
        finally:
            height = self._reached - self._depth + 1
            self._reached = max(outer_reached, self._reached)
            self._depth -= 1
        if getattr(event, "anchor", None) is not None:
            self._anchored[id(node)] = (self._values - before + 1, height)
        return node

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803  (PyYAML's name)
        # Caught while scanning too: the scanner's look-ahead over a long run of `[` is quadratic
        # (each token rechecks every pending simple key), long before the composer sees depth.
        if self.flow_level >= MAX_DEPTH:
            mark = self.get_mark()
            raise Invalid((), _DEPTH_PROBLEM, (mark.line + 1, mark.column + 1))
        super().fetch_flow_collection_start(TokenClass)

    def _count(self, values: int, event: yaml.Event, *, alias: bool) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            what = (
                f"YAML aliases expand the config to more than {MAX_VALUES} values "
                "(alias expansion limit)"
                if alias
                else f"the config holds more than {MAX_VALUES} values (value count limit)"
            )
            raise Invalid((), what, _event_position(event))

    def _deepen(self, depth: int, event: yaml.Event) -> None:
        self._reached = max(self._reached, depth)
        if depth > MAX_DEPTH:
            raise Invalid((), _DEPTH_PROBLEM, _event_position(event))


class _Builder:
    """Builds plain data from the composed graph. Bounded: the loader capped depth and values."""

    def __init__(self, loader: yaml.SafeLoader, marks: Marks) -> None:
        self._loader = loader
        self._marks = marks
        # Each mapping's own keys, taken before its first merge flattening (which is in place, so
        # a second use of the node through an alias must not see merged keys as its own).
        self._own: dict[int, set[int]] = {}

    def build(self, node: yaml.Node, path: KeyPath) -> object:
        if isinstance(node, yaml.ScalarNode):
            return self._loader.construct_object(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
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
        own = self._own.setdefault(id(node), {id(k) for k, _ in node.value})
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
