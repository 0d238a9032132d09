"""The config's JSON Schema, generated from `spec.SPEC` (the loader's own description).

Regenerate the committed copy with:

    python3 -m devsupervisor.config.schema > config/devsup.schema.json

The schema covers structure (keys, types, choices, patterns). Rules that span keys or need the
filesystem (paths exist, `default_stack` names a stack, sections the stack modes need) are the
loader's alone: `devsup config check` is the full check.
"""

from __future__ import annotations

import json
import sys

from devsupervisor.config.fields import JsonSchema
from devsupervisor.config.spec import SPEC

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> JsonSchema:
    """The JSON Schema (draft 2020-12) of a devsup config file."""
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "devsup config",
        "description": (
            "Config of devsup, the dev stack supervisor. Paths are relative to this file."
        ),
        **SPEC.json_schema(),
    }


def render_schema() -> str:
    """The schema as the exact text of the committed `config/devsup.schema.json`."""
    return json.dumps(config_schema(), indent=2) + "\n"


def main() -> int:
    sys.stdout.write(render_schema())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
