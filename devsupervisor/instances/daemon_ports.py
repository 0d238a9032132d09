"""One instance's ports as the daemon uses them: allocated at start (and for names a live reload
adds), exported to the environment every compose call, build, prebuild and platform process
inherits, and substituted for `${NAME}` in the config's strings.

The daemon sets the variables in its own `os.environ` before it spawns anything: every child
(docker compose, the build, the prebuild, the platform) inherits them, with no environment to
thread through each spawner.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import MutableMapping

import psutil

from devsupervisor.config.model import Config
from devsupervisor.config.ports import substitute_ports
from devsupervisor.instances.allocation import PortRegistry, compose_published
from devsupervisor.platform.process import ProcessIdentity
from devsupervisor.statefile import SavedState, StateStore


class InstancePorts:
    """The ports of instance `instance`, remembered in `saved` (written through `store`).

    Args:
        use_engine: ask the Docker engine which ports this instance's containers publish (off for
            a remote engine, whose published ports are not this machine's).
        environ: the environment children inherit (seam for tests).
    """

    def __init__(
        self,
        instance: str,
        saved: SavedState,
        store: StateStore,
        *,
        registry: PortRegistry | None = None,
        use_engine: bool = True,
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        self.instance = instance
        self.current: dict[str, int] = {}
        self._checkout: str | None = None
        self._saved = saved
        self._store = store
        self._registry = registry or PortRegistry(store.path.parent)
        self._use_engine = use_engine
        self._environ = os.environ if environ is None else environ

    def prepare(self, config: Config) -> Config:
        """`config` as this instance runs it: its `instance` set, a port for every NAME of its
        `ports` (allocating those not given yet), `${NAME}` replaced, the variables exported.

        Raises:
            PortsExhausted: see `PortRegistry.allocate`.
        """
        self._checkout = str(config.source) if config.source is not None else None
        missing = {name: port for name, port in config.ports.items() if name not in self.current}
        if missing:
            self._registry.allocate(
                self.instance,
                missing,
                self._saved.ports,
                save=self._save,
                own=self._own_ports,
                given=self.current.values(),
            )
        for name in config.ports:
            self._environ[name] = str(self.current[name])
        ports = {name: self.current[name] for name in config.ports}
        return substitute_ports(dataclasses.replace(config, instance=self.instance), ports)

    def _save(self, allocated: dict[str, int]) -> None:
        # Still under the registry's lock: the next daemon to allocate sees these ports taken.
        self.current.update(allocated)
        self._saved.ports = dict(self.current)
        self._saved.checkout = self._checkout
        self._store.save(self._saved)

    def _own_ports(self) -> set[int]:
        """Ports this instance itself holds: published by its containers, or listened on by a
        platform process an earlier daemon of it started."""
        owned = compose_published(self.instance) if self._use_engine else set()
        for record in self._saved.platforms:
            process = ProcessIdentity(record.pid, record.create_time).process()
            if process is None:
                continue
            try:
                connections = process.net_connections(kind="inet")
            except psutil.Error:  # gone or not ours to inspect: it holds nothing then
                continue
            owned.update(c.laddr.port for c in connections if c.laddr)
        return owned
