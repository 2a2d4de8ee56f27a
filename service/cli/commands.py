"""The subcommands of ``storage-worker``, in one table: name, help, arguments, coroutine, start-up checks.

Written out here rather than registered by the subcommand modules on import, so the list is what this file
says and the modules import nothing of the package that lists them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from service.cli.importer import import_arguments, import_cmd
from service.cli.maintenance import cleanup_arguments, cleanup_cmd, verify_arguments, verify_cmd
from service.cli.top import top, top_arguments
from service.cli.worker import (
    health,
    health_arguments,
    migrate_arguments,
    migrate_cmd,
    run,
    signal_arguments,
    signal_cmd,
)
from service.settings import Settings
from service.startup import ALL_STAGES, STORES, Stage

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True, slots=True)
class Subcommand:
    help: str
    run: Command
    arguments: Arguments | None = None
    checks: tuple[Stage, ...] = ()
    """The start-up stages to check first (``service.startup``): the systems the command opens, so a wrong
    setting is one line, not a traceback."""


COMMANDS: dict[str, Subcommand] = {
    "run": Subcommand("run the worker until SIGTERM or SIGINT", run, checks=ALL_STAGES),
    "migrate": Subcommand(
        "create or upgrade the database schema (Alembic, to head)",
        migrate_cmd,
        migrate_arguments,
        checks=(Stage.DATABASE,),
    ),
    "health": Subcommand("send ping over the bus; exit 0 when answered in time", health, health_arguments),
    "signal": Subcommand(
        "send a CONTROL signal (pause, resume, shutdown, config, stop) to a node, all storage nodes or all nodes",
        signal_cmd,
        signal_arguments,
    ),
    "cleanup": Subcommand(
        "run the cleanup scopes once, here (with SQLite: only while no worker runs)",
        cleanup_cmd,
        cleanup_arguments,
        checks=STORES,
    ),
    "verify": Subcommand(
        "re-hash completed artifacts' files (a batch, or --all) and fail the corrupted ones; exit 1 if any",
        verify_cmd,
        verify_arguments,
        checks=STORES,
    ),
    "import": Subcommand(
        "import a legacy MindBus storage directory (storage.db + artifacts/)",
        import_cmd,
        import_arguments,
        checks=STORES,
    ),
    "top": Subcommand("live view: commands/s by action, errors, queue depth, a client's buffer", top, top_arguments),
}


ENTRY_POINT_GROUP = "storage_worker.commands"
"""Subcommands installed from outside this package (``storage-worker console`` lives in ``console``, a bus
client that this package must not import): each entry point names an ``OutsideCommand``."""


class OutsideCommand(Protocol):
    """A subcommand that loads its own settings: it needs none of the worker's (no database, no storage)."""

    help: str

    def arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


def outside_commands() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed outside subcommands, by name; loaded only when one is run or its help is shown."""
    return {
        entry.name: entry
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if entry.name not in COMMANDS
    }
