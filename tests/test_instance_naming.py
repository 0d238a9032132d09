"""Instance names: the slug rule, linked-worktree detection from `.git`, precedence, and the
client finding a worktree's daemon from its config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devsupervisor import paths
from devsupervisor.cli.daemon_socket import name_from_config, socket_for
from devsupervisor.errors import UsageError
from devsupervisor.instances import naming as instance


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        ("review", "review"),
        ("Feature/Login_Page", "feature-login-page"),
        ("fix--double..dots", "fix-double-dots"),
        ("_agent 2_", "agent-2"),
        ("a" * 40, "a" * 24),
        ("abcdefghijklmnopqrstuvw.xyz", "abcdefghijklmnopqrstuvw"),
        ("ÄÖÜ", "worktree"),
    ],
)
def test_slug_rule(directory: str, expected: str) -> None:
    """Lowercased, runs outside [a-z0-9] as one '-', at most 24 characters, no '-' at the ends."""
    assert instance.slug(directory) == expected


def _fake_repo(tmp_path: Path) -> tuple[Path, Path]:
    main = tmp_path / "main"
    (main / ".git" / "worktrees" / "wt").mkdir(parents=True)
    tree = tmp_path / "Agent_One"
    (tree / "config").mkdir(parents=True)
    (tree / ".git").write_text(f"gitdir: {main}/.git/worktrees/wt\n")
    return main, tree


def test_linked_worktree_found_from_a_nested_config(tmp_path: Path) -> None:
    """Walking up from the config's directory finds the worktree whose `.git` file points into
    `<main>/.git/worktrees/`."""
    _, tree = _fake_repo(tmp_path)
    assert instance.linked_worktree(tree / "config") == str(tree)
    assert instance.derive("demo", tree / "config" / "devsup.yaml") == "demo-agent-one"


def test_relative_gitdir_is_resolved_from_the_worktree(tmp_path: Path) -> None:
    """A relative `gitdir:` (git worktree add --relative-paths) counts too."""
    _, tree = _fake_repo(tmp_path)
    (tree / ".git").write_text("gitdir: ../main/.git/worktrees/wt\n")
    assert instance.derive("demo", tree / "devsup.yaml") == "demo-agent-one"


def test_primary_checkout_submodule_and_no_git_keep_the_project(tmp_path: Path) -> None:
    """A `.git` directory, a submodule's `.git` file and no git at all give the project name."""
    main, _ = _fake_repo(tmp_path)
    (main / "config").mkdir()
    assert instance.derive("demo", main / "config" / "devsup.yaml") == "demo"
    sub = main / "vendor" / "lib"
    sub.mkdir(parents=True)
    (sub / ".git").write_text("gitdir: ../../.git/modules/lib\n")
    assert instance.derive("demo", sub / "devsup.yaml") == "demo"
    bare = tmp_path / "plain"
    bare.mkdir()
    assert instance.derive("demo", bare / "devsup.yaml") == "demo"
    assert instance.derive("demo", None) == "demo"


def test_garbage_dot_git_file_is_not_a_worktree(tmp_path: Path) -> None:
    """A `.git` file that is not `gitdir: ...` is no linked worktree, and never an error."""
    (tmp_path / ".git").write_bytes(b"\xff\x00junk")
    assert instance.derive("demo", tmp_path / "devsup.yaml") == "demo"


def test_precedence_and_bad_override() -> None:
    """--instance, else the config's instance, else derived; a bad --instance is a usage error."""
    assert instance.resolve("demo", "mine", None, "cli") == "cli"
    assert instance.resolve("demo", "mine", None) == "mine"
    assert instance.resolve("demo", None, None) == "demo"
    with pytest.raises(UsageError):
        instance.resolve("demo", None, None, "Bad/Name")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is a prerequisite of worktrees")
def test_real_git_worktree(tmp_path: Path) -> None:
    """A worktree made by `git worktree add` is named `<project>-<slug>`; the main one keeps it."""
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "devsup.yaml").write_text("project: demo\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "x"], check=True)
    tree = tmp_path / "Review.PR-42"
    subprocess.run([*git, "-C", str(repo), "worktree", "add", "-q", str(tree)], check=True)
    assert instance.derive("demo", repo / "config" / "devsup.yaml") == "demo"
    assert instance.derive("demo", tree / "config" / "devsup.yaml") == "demo-review-pr-42"


def test_client_reaches_the_worktree_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client in a worktree resolves that worktree's socket; `instance:` in the config wins."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("DEVSUP_CONFIG", raising=False)
    _, tree = _fake_repo(tmp_path)
    config = tree / "config" / "devsup.yaml"
    config.write_text("project: demo\nstacks: [broken\n")
    monkeypatch.chdir(tree)
    assert name_from_config(None) == "demo-agent-one"
    assert socket_for(None, None) == paths.socket_path("demo-agent-one")
    assert socket_for("other", None) == paths.socket_path("other")
    config.write_text("project: demo\ninstance: pinned\n")
    assert name_from_config(None) == "pinned"
