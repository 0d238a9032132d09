"""The state file: lenient field-by-field reading, atomic writes that never raise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from devsupervisor import statefile
from devsupervisor.statefile import PlatformRecord, SavedState, StateStore

REPO = Path(__file__).resolve().parents[1]


def full_state() -> SavedState:
    return SavedState(
        stack="fullstack",
        platforms=[PlatformRecord(4242, 1700000000.25), PlatformRecord(4343, 1700000001.5)],
        builds={"binary": "abc", "container": "def"},
        ports={"POSTGRES_PORT": 15432, "HTTP_PORT": 8080},
    )


# --- reading -----------------------------------------------------------------------------------


def test_saved_state_reads_back_whole(tmp_path: Path) -> None:
    """What save() wrote, load() returns, every platform and port included."""
    path = tmp_path / "p.json"
    assert StateStore(path).save(full_state())
    assert statefile.load(path) == full_state()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_old_single_platform_keys_are_read(tmp_path: Path) -> None:
    """A file from before `platforms` existed still names its platform."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"stack": "s", "platform_pid": 77, "platform_create_time": 12.5}))
    state = statefile.load(path)
    assert state.platforms == [PlatformRecord(77, 12.5)]


def test_missing_file_is_an_empty_state_without_warning(tmp_path: Path) -> None:
    """No state file yet is the normal first start: nothing to warn about."""
    with capture_logs() as logs:
        assert statefile.load(tmp_path / "none.json") == SavedState()
    assert logs == []


GARBAGE_FILES: dict[str, bytes] = {
    "truncated": b'{"stack": "s", "platforms": [{"pid": 4',
    "a list": b'[{"stack": "s"}]',
    "a string": b'"stack"',
    "not utf-8": b'{"stack": "\xff\xfe"}',
    "NaN": b'{"stack": "s", "platform_create_time": NaN}',
    "empty": b"",
    "deep": b"[" * 100_000,
}


@pytest.mark.parametrize("case", sorted(GARBAGE_FILES))
def test_unreadable_file_is_an_empty_state_with_a_warning(tmp_path: Path, case: str) -> None:
    """A file that is not a JSON object of UTF-8 is ignored with one warning, never an error."""
    path = tmp_path / "p.json"
    path.write_bytes(GARBAGE_FILES[case])
    with capture_logs() as logs:
        assert statefile.load(path) == SavedState()
    assert [entry["event"] for entry in logs] == ["state.unreadable"]


BAD_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "negative pid": ({"platform_pid": -1, "platform_create_time": 1.0}, "platform_pid"),
    "zero pid": ({"platforms": [{"pid": 0, "create_time": 1.0}]}, "platforms[0]"),
    "huge pid": ({"platforms": [{"pid": 2**40, "create_time": 1.0}]}, "platforms[0]"),
    "pid as string": ({"platforms": [{"pid": "12", "create_time": 1.0}]}, "platforms[0]"),
    "pid as bool": ({"platform_pid": True, "platform_create_time": 1.0}, "platform_pid"),
    "negative time": ({"platforms": [{"pid": 5, "create_time": -3}]}, "platforms[0]"),
    "platform not object": ({"platforms": [7]}, "platforms[0]"),
    "platforms not list": ({"platforms": {"pid": 5}}, "platforms"),
    "stack as number": ({"stack": 3}, "stack"),
    "empty stack": ({"stack": ""}, "stack"),
    "builds as list": ({"builds": ["abc"]}, "builds"),
    "build as number": ({"builds": {"binary": 1}}, "builds.binary"),
    "port as string": ({"ports": {"HTTP": "8080"}}, "ports.HTTP"),
    "port out of range": ({"ports": {"HTTP": 70000}}, "ports.HTTP"),
    "port as float": ({"ports": {"HTTP": 80.5}}, "ports.HTTP"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_bad_field_is_dropped_and_the_rest_kept(tmp_path: Path, case: str) -> None:
    """Each untrustworthy field is dropped with a warning naming it; good fields survive."""
    bad, field = BAD_FIELDS[case]
    good = {
        "stack": "kept",
        "platforms": [{"pid": 10, "create_time": 5.0}],
        "builds": {"container": "fp"},
        "ports": {"DB": 5432},
    }
    path = tmp_path / "p.json"
    raw = {**good, **bad}
    path.write_text(json.dumps(raw))
    with capture_logs() as logs:
        state = statefile.load(path)
    ignored = [entry for entry in logs if entry["event"] == "state.field_ignored"]
    assert [entry["field"] for entry in ignored] == [field]
    expected = SavedState(
        stack="kept",
        platforms=[PlatformRecord(10, 5.0)],
        builds={"container": "fp"},
        ports={"DB": 5432},
    )
    for name in ("stack", "platforms", "builds", "ports"):
        if name in bad or (name == "platforms" and field.startswith("platform")):
            continue  # the bad field replaced the good one; what is left of it is checked below
        assert getattr(state, name) == getattr(expected, name), name
    assert all(0 < p.pid <= statefile.PID_MAX for p in state.platforms)


def test_negative_pid_cannot_reach_psutil(tmp_path: Path) -> None:
    """`{"platform_pid": -1}` (which crashed every start) yields no platform to look up."""
    path = tmp_path / "p.json"
    path.write_text('{"platform_pid": -1, "platform_create_time": 1}')
    with capture_logs():
        assert statefile.load(path).platforms == []


# --- writing -----------------------------------------------------------------------------------


def test_directory_at_the_path_is_reported_once_and_recovers(tmp_path: Path) -> None:
    """A directory where the file belongs: save() returns False, logs once, keeps the error;
    the next save that works clears it."""
    path = tmp_path / "p.json"
    path.mkdir()
    store = StateStore(path)
    with capture_logs() as logs:
        assert store.save(full_state()) is False
        assert store.save(full_state()) is False
        assert store.error is not None
        assert str(path) in store.error
        assert "directory" in store.error.lower()
        path.rmdir()
        assert store.save(full_state()) is True
    assert store.error is None
    assert [entry["event"] for entry in logs] == ["state.write_failed", "state.write_recovered"]
    assert statefile.load(path) == full_state()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # no temp file left


def test_file_where_the_directory_belongs_is_reported(tmp_path: Path) -> None:
    """A file in place of the state directory: save() returns False and logs once."""
    (tmp_path / "blocked").write_text("a file where the directory should be")
    store = StateStore(tmp_path / "blocked" / "p.json")
    with capture_logs() as logs:
        assert store.save(full_state()) is False
        assert store.save(full_state()) is False
    assert [entry["event"] for entry in logs] == ["state.write_failed"]
    assert store.error is not None


def test_write_replaces_atomically(tmp_path: Path) -> None:
    """The file is replaced by rename: a reader holding the old one keeps reading the old data."""
    path = tmp_path / "p.json"
    store = StateStore(path)
    store.save(SavedState(stack="one"))
    with path.open() as old:
        store.save(SavedState(stack="two"))
        assert json.load(old)["stack"] == "one"
    assert statefile.load(path).stack == "two"


# What a mounted file system can refuse, checked in a private mount namespace (needs root).
MOUNT_SCRIPT = """
import json, sys
from pathlib import Path
from structlog.testing import capture_logs
from devsupervisor.statefile import SavedState, StateStore, load
path = Path(sys.argv[1]) / "p.json"
store = StateStore(path)
before = path.read_bytes() if path.exists() else b""
with capture_logs() as logs:
    results = [store.save(SavedState(stack="x" * 20000)) for _ in range(3)]
print(json.dumps({
    "results": results,
    "error": store.error,
    "events": [e["event"] for e in logs],
    "unchanged": (path.read_bytes() if path.exists() else b"") == before,
    "loaded": load(path).stack,
    "files": sorted(p.name for p in path.parent.iterdir()),
}))
"""


def run_under_mount(tmp_path: Path, mount: str) -> dict[str, Any]:
    if os.getuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare(1) to mount a read-only or full file system")
    target = tmp_path / "state"
    target.mkdir()
    StateStore(target / "p.json").save(SavedState(stack="before"))
    shell = f'{mount} && exec {sys.executable} -c "$0" {target}'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, MOUNT_SCRIPT],
        env={**os.environ, "PYTHONPATH": str(REPO), "T": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_read_only_file_system_is_reported_and_old_state_kept(tmp_path: Path) -> None:
    """On a read-only mount, save() fails quietly after one log line; the old file is intact."""
    result = run_under_mount(tmp_path, 'mount --bind "$T" "$T" && mount -o remount,ro,bind "$T"')
    assert result["results"] == [False, False, False]
    assert "Read-only file system" in result["error"]
    assert result["events"] == ["state.write_failed"]
    assert result["unchanged"] is True
    assert result["loaded"] == "before"
    assert result["files"] == ["p.json"]


def test_full_disk_is_reported_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """With no space left, save() fails after one log line and leaves no half-written file."""
    fill = 'mount -t tmpfs -o size=8k none "$T" && (head -c 1M /dev/zero > "$T/fill" || true)'
    result = run_under_mount(tmp_path, fill)
    assert result["results"] == [False, False, False]
    assert "No space left on device" in result["error"]
    assert result["events"] == ["state.write_failed"]
    assert result["loaded"] is None
    assert result["files"] == ["fill"]
