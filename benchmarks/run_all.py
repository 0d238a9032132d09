"""Run every benchmark script in this folder, one after the other, and show their output.

A benchmark is any `*.py` here except this runner and `__init__.py`. Each runs with the same
interpreter as this one; the exit status is non-zero when any of them failed.

Run: `python3 benchmarks/run_all.py` (or `make bench`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run_all.py", "__init__.py"}


def discover() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS)


def main() -> int:
    failed: list[str] = []
    scripts = discover()
    for script in scripts:
        print(f"\n##### {script.name}", flush=True)
        started = time.monotonic()
        # Output goes straight through, so a long benchmark shows its progress as it runs.
        code = subprocess.run([sys.executable, str(script)], check=False).returncode
        print(f"##### {script.name}: exit {code} after {time.monotonic() - started:.1f}s")
        if code != 0:
            failed.append(script.name)
    print(f"\n{len(scripts) - len(failed)}/{len(scripts)} benchmarks succeeded", end="")
    print(f"; failed: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
