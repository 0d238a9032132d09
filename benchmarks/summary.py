"""Rows for the one results table that `run_all.py` writes to `benchmarks/results.md`.

A benchmark calls `add_row` for each headline figure; the rows go to the JSON-lines file named
by DEVSUP_BENCH_SUMMARY (set by `run_all.py`), and nowhere when a script runs on its own.
"""

from __future__ import annotations

import json
import os

ENV = "DEVSUP_BENCH_SUMMARY"


def add_row(
    benchmark: str,
    measure: str,
    devsup: str,
    *,
    reference: str = "",
    target: str = "",
    met: bool | None = None,
) -> None:
    """One line of the table: what devsup measured, what it is compared with, the target."""
    path = os.environ.get(ENV)
    if not path:
        return
    row = {
        "benchmark": benchmark,
        "measure": measure,
        "devsup": devsup,
        "reference": reference,
        "target": target,
        "met": met,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
