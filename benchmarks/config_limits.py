"""Time and peak RSS of `devsup config check` on hostile configs (issue: YAML bombs, size, depth).

Each case runs in its own child process; its peak RSS comes from that child's own rusage
(`os.wait4`), so one case's figure is not another's. Usage: python benchmarks/config_limits.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def alias_bomb(levels: int) -> str:
    lines = ["project: bomb", 'x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def write_big(path: Path, megabytes: int) -> None:
    # Written in pieces: a child's peak RSS includes what this process held when it forked.
    line = "      - " + "x" * 60 + "\n"
    with path.open("w") as file:
        file.write("project: big\nstacks:\n  a:\n    profiles:\n")
        for _ in range(megabytes * 2**20 // len(line) // 1000):
            file.write(line * 1000)


CASES: dict[str, Callable[[Path], object]] = {
    "alias bomb, 7 levels (354 B)": lambda p: p.write_text(alias_bomb(7)),
    "alias bomb, 10 levels": lambda p: p.write_text(alias_bomb(10)),
    "5,000-deep list": lambda p: p.write_text("project: d\nstacks: " + "[" * 5000 + "]" * 5000),
    "37 MB config": lambda p: write_big(p, 37),
    "100,000-value flow list": lambda p: p.write_text("project: x\na: [" + "1," * 99_999 + "1]"),
}


def measure(path: Path) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in MB, exit code, last stderr line) of one `config check`."""
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "devsupervisor", "config", "check", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    last = (err.strip().splitlines() or [""])[-1]
    return seconds, usage.ru_maxrss / 1024, child.returncode, last


def main() -> int:
    shipped = Path(__file__).parent.parent / "config"
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for index, (name, build) in enumerate(CASES.items()):
            paths[name] = Path(tmp) / f"case{index}.yaml"
            build(paths[name])
        # The valid config refers to files relative to config/: check it in place.
        paths["valid shipped config (baseline)"] = shipped / "devsup.yaml"
        for name, path in paths.items():
            seconds, rss, code, last = measure(path)
            print(f"{name:34} exit {code}  {seconds:5.2f} s  {rss:6.1f} MB  {last[-80:]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
