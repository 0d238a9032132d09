"""Watches what defines the stack besides the sources: the devsup config file, the compose files
and compose's `.env`. Uses the same content-hashing watcher as the sources, so a save that
changes nothing triggers nothing; one watch per directory, not recursive: the config usually
sits at the top of the source tree, and watching that whole tree twice would double the inotify
watches and the start-up walk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from devsupervisor.config.model import Config
from devsupervisor.watch.watcher import SourceWatcher


def watched_files(config: Config) -> dict[Path, set[str]]:
    """Directory -> file names in it that matter (config file, every compose file, .env)."""
    dirs: dict[Path, set[str]] = {}
    if config.source is not None:
        # A symlinked config (kept with one's dotfiles) is edited at its target: watch both the
        # link (replaced by `ln -sf`) and the file it points to.
        for path in (config.source.absolute(), config.source.resolve()):
            dirs.setdefault(path.parent.resolve(), set()).add(path.name)
    names = {*config.compose.files, *(f for s in config.stacks.values() for f in s.files)}
    if names:
        directory = config.compose.directory.resolve()
        dirs.setdefault(directory, set()).update({*names, ".env"})
    return dirs


class ConfigWatch:
    def __init__(
        self,
        config: Config,
        *,
        on_change: Callable[[frozenset[Path]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._watchers = [
            SourceWatcher(
                [directory],
                # Anchored names: only these files directly in this directory.
                [f"/{name}" for name in sorted(names)],
                [],
                on_change=on_change,
                loop=loop,
                recursive=False,
                index_delay=0,  # a few files: nothing to defer
            )
            for directory, names in watched_files(config).items()
        ]

    def start(self) -> None:
        for watcher in self._watchers:
            watcher.start()

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
