"""The config's JSON Schema, generated from the model's declaration (`model`).

Regenerate the committed copy with:

    python3 -m devsupervisor.config.schema > config/devsup.schema.json

The schema covers structure (keys, types, choices, patterns). Rules that span keys or need the
filesystem (paths exist, `default_stack` names a stack, sections the stack modes need) are the
loader's alone: `devsup config check` is the full check.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from devsupervisor.config.checks import JsonSchema, MinItems
from devsupervisor.config.convert import SIGNAL_NAMES
from devsupervisor.config.model import Config
from devsupervisor.config.walk import is_union, to_data, type_hints, unwrap, yaml_fields

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS: dict[Any, JsonSchema] = {
    str: {"type": "string", "minLength": 1},
    Path: {"type": "string", "minLength": 1},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}


def config_schema() -> JsonSchema:
    """The JSON Schema (draft 2020-12) of a devsup config file."""
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "devsup config",
        "description": (
            "Config of devsup, the dev stack supervisor. Paths are relative to this file."
        ),
        **type_schema(Config),
    }


def type_schema(tp: Any) -> JsonSchema:
    """The JSON Schema of one model type (see `convert` for what each type accepts)."""
    inner, checks = unwrap(tp)
    schema = _bare(inner)
    for check in checks:
        extra = check.schema()
        if isinstance(check, MinItems):
            # One check serves lists and mappings; keep the keyword of the type at hand.
            keep = "minItems" if schema.get("type") == "array" else "minProperties"
            extra = {keep: extra[keep]}
        if "type" in extra:
            schema.pop("minLength", None)
        schema.update(extra)
    return schema


def _bare(tp: Any) -> JsonSchema:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _section(typing.cast(type, tp))
    if is_union(tp):
        members = [type_schema(a) for a in typing.get_args(tp) if a is not type(None)]
        return members[0] if len(members) == 1 else {"anyOf": members}
    if origin is Literal:
        values = list(tp.__args__)
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is tuple:
        return {"type": "array", "items": type_schema(typing.get_args(tp)[0])}
    if origin is dict:
        key, value = typing.get_args(tp)
        names = {k: v for k, v in type_schema(key).items() if k not in ("type", "minLength")}
        return {
            "type": "object",
            "propertyNames": names,
            "additionalProperties": type_schema(value),
        }
    if tp is signal.Signals:
        return {"enum": list(SIGNAL_NAMES)}
    return dict(_SCALARS[tp])


def _section(cls: type) -> JsonSchema:
    hints = type_hints(cls)
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for f in yaml_fields(cls):
        prop = type_schema(hints[f.name])
        if f.metadata.get("doc"):
            prop["description"] = f.metadata["doc"]
        if f.default is not dataclasses.MISSING:
            if f.default is not None and not f.metadata.get("computed"):
                prop["default"] = to_data(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = to_data(f.default_factory())
        else:
            required.append(f.name)
        properties[f.name] = prop
    schema: JsonSchema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    one_of: tuple[str, ...] = getattr(cls, "ONE_OF", ())
    if one_of:
        schema["oneOf"] = [{"required": [k]} for k in one_of]
    return schema


def render_schema() -> str:
    """The schema as the exact text of the committed `config/devsup.schema.json`."""
    return json.dumps(config_schema(), indent=2) + "\n"


def main() -> int:
    sys.stdout.write(render_schema())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
