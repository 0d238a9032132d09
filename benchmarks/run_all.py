"""Run every benchmark script in this folder, one after the other, and write one results table.

A benchmark is any `*.py` here except this runner, `summary.py` and `__init__.py`. Each runs with
the same interpreter as this one, its output passed straight through. The headline figures each
script reports through `summary.add_row` are collected into ONE markdown table, written to
`benchmarks/results.md` with the machine it came from; the exit status is non-zero when any
script failed.

Run: `python3 benchmarks/run_all.py [--only NAME[,NAME]] [--out FILE]` (or `make bench`);
`--from-rows FILE` writes the table from rows collected earlier (scripts run by hand with
DEVSUP_BENCH_SUMMARY=FILE, e.g. with fewer trials) without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.summary import ENV  # noqa: E402  (the repo root must be on sys.path first)

NOT_BENCHMARKS = {"run_all.py", "summary.py", "__init__.py"}


def discover() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS)


def machine() -> str:
    """CPU model and count, memory, kernel, Python: where the figures came from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {mem_kb / 1024 / 1024:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def table(rows: list[dict[str, object]], codes: dict[str, int]) -> str:
    def met(value: object) -> str:
        return {True: "yes", False: "**no**"}.get(value, "") if isinstance(value, bool) else ""

    lines = [
        "| benchmark | measure | devsup | reference (floor or peers) | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["benchmark"], row["measure"], row["devsup"], row["reference"], row["target"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + f" | {met(row['met'])} |")
    for name, code in codes.items():
        if code != 0:
            lines.append(f"| {name} | exit status {code} | failed: see its output | | | |")
    return "\n".join(lines)


def write_report(
    out: Path,
    rows: list[dict[str, object]],
    codes: dict[str, int],
    started_at: datetime,
    how: str = "`make bench` (benchmarks/run_all.py)",
) -> None:
    report = (
        f"# Benchmark results\n\n"
        f"{how}, {started_at:%Y-%m-%d %H:%M} UTC, on "
        f"{machine()}; load average at the end {os.getloadavg()[0]:.2f}. Medians unless said "
        f"otherwise; each script's own output has the per-trial figures.\n\n"
        f"{table(rows, codes)}\n"
    )
    out.write_text(report)
    print(f"\n{report}\nwritten to {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", help="comma-separated script names (without .py)")
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--from-rows", type=Path, help="write the table from these rows only")
    parser.add_argument("--note", help="with --from-rows: how the rows were made")
    args = parser.parse_args()
    if args.from_rows is not None:
        rows = [json.loads(line) for line in args.from_rows.read_text().splitlines() if line]
        how = args.note or "Rows of separate script runs, tabled by `run_all.py --from-rows`"
        write_report(args.out, rows, {}, datetime.now(UTC), how)
        return 0
    scripts = discover()
    if args.only:
        wanted = set(args.only.split(","))
        scripts = [s for s in scripts if s.stem in wanted]
    codes: dict[str, int] = {}
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="devsup-bench-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        env = {**os.environ, ENV: str(rows_file)}
        for script in scripts:
            print(f"\n##### {script.name}", flush=True)
            started = time.monotonic()
            # Output goes straight through, so a long benchmark shows its progress as it runs.
            code = subprocess.run([sys.executable, str(script)], check=False, env=env).returncode
            print(f"##### {script.name}: exit {code} after {time.monotonic() - started:.1f}s")
            codes[script.stem] = code
        rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line]
    failed = [name for name, code in codes.items() if code != 0]
    write_report(args.out, rows, codes, started_at)
    print(f"{len(scripts) - len(failed)}/{len(scripts)} benchmarks succeeded", end="")
    print(f"; failed: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
