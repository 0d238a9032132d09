"""The commands that work without a daemon: `run` (which is the daemon), `config check` and
`service`. They load the config and the modules they drive, so client commands never import
this module.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import sys

from devsupervisor.config.identity import read_identity
from devsupervisor.config.load import load_config
from devsupervisor.config.locate import find_config
from devsupervisor.config.render import render_resolved
from devsupervisor.instances import naming as instance
from devsupervisor.logs import pipeline as logs
from devsupervisor.systemd import unit as service


def cmd_run(args: argparse.Namespace) -> int:
    from devsupervisor.daemon import Daemon  # the daemon's imports are the heaviest of all

    # When systemd's watchdog fires it sends SIGABRT: leave every thread's traceback in the journal.
    faulthandler.enable()
    config = load_config(find_config(args.config))

    async def main() -> int:
        return await Daemon(config, stack=args.stack, instance_name=args.instance).run()

    return asyncio.run(main())


def quiet_library_logs() -> None:
    """`config check` and `service` print their own results; library log records would only
    repeat them."""
    logs.configure(None, console=None)


def cmd_config(args: argparse.Namespace) -> int:
    quiet_library_logs()
    config = load_config(find_config(args.path))
    sys.stdout.write(render_resolved(config))
    return 0


def service_instance(args: argparse.Namespace) -> str:
    """The instance `service` acts on: `--instance`, else that of the config found as for
    `run` (its `instance:`, else derived from the checkout).

    Raises:
        ConfigNotFound: no `--instance` and no config.
    """
    if args.instance:
        return instance.resolve("", None, None, args.instance)
    config_path = find_config(args.config)
    project, configured = read_identity(config_path)
    if project is None and configured is None:
        return load_config(config_path).project  # raises the config's own error
    return instance.resolve(project or "", configured, config_path)


def cmd_service(args: argparse.Namespace) -> int:
    quiet_library_logs()
    name = service_instance(args)
    if args.action == "install":
        config_path = find_config(args.config)
        result = service.install(config_path, force=args.force, instance=name)
        if result.retired is not None:
            print(f"replaced {result.retired} (devsup before instances) for instance {name}")
        print(f"{'wrote' if result.changed else 'unchanged'} {result.unit_path}")
        for run in result.ran:
            print(f"ran: {' '.join(run.argv)} (exit {run.returncode})")
        if result.todo:
            if result.enabled:
                print("enabled (starts at next login); no user manager answers, to start it now:")
            else:
                print("no systemd user manager answers here; run these to enable and start it:")
            for argv in result.todo:
                print("  " + " ".join(argv))
        return 0 if result.ok else 1
    if args.action == "uninstall":
        removed = service.uninstall(instance=name)
        print(f"{'removed' if removed.removed else 'nothing to remove at'} {removed.unit_path}")
        return 0 if removed.ok else 1
    st = service.status(instance=name)
    print(f"unit     {st.unit_path} ({'installed' if st.installed else 'not installed'})")
    if st.exec_start:
        print(f"runs     {st.exec_start}")
    print(
        f"enabled  {st.enabled or '-'}   active {st.active or '-'}   manager "
        f"{'yes' if st.manager else 'no'}"
    )
    return 0
