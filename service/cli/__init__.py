"""``storage-worker``: run the worker, migrate the schema, check health over the bus."""

from __future__ import annotations

import argparse
import logging
import sys

from service.cli.commands import COMMANDS, Command, OutsideCommand, outside_commands
from service.settings import Settings
from service.startup import Stage, StartupError, explain, load_settings, preflight, report
from service.transport.loop import run as run_loop

DEBUG_HELP = "on a failed start, print the traceback above the one-line reason"


def setup_logging(settings: Settings) -> None:
    from service.logs import configure

    configure(settings.log_level, settings.log_format)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin when imported


def parser() -> argparse.ArgumentParser:
    """The ``storage-worker`` parser, one subparser per entry of ``COMMANDS``."""
    top = argparse.ArgumentParser(prog="storage-worker", description=__doc__)
    top.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = top.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if command.arguments is not None:
            command.arguments(p)
    for name, entry in outside_commands().items():
        try:
            outside: OutsideCommand = entry.load()
        except ImportError as exc:  # its extra is not installed: say how to get it instead of hiding it
            sub.add_parser(name, help=f"(not installed: {exc.name}; pip install 'mindbus-storage[{name}]')")
            continue
        p = sub.add_parser(name, help=outside.help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        outside.arguments(p)
    return top


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0, 1 for a command's own "no" or an unexpected failure, and one per known start-up
    mistake (2 and up, the table in ``service.startup.codes``)."""
    args = parser().parse_args(argv)
    if args.command not in COMMANDS:
        return _run_outside(args)
    command = COMMANDS[args.command]
    try:
        settings = load_settings()
    except StartupError as error:
        return report(error, debug=args.debug)
    setup_logging(settings)
    try:
        return run_loop(_checked(command.run, command.checks, args, settings), choice=settings.event_loop)
    except StartupError as error:
        return report(error, debug=args.debug)
    except Exception as exc:  # a known mistake met past the checks (the database gone mid-command) is one line too
        known = explain(exc, settings)
        if known is None:
            raise
        return report(known, debug=args.debug)


def _run_outside(args: argparse.Namespace) -> int:
    try:
        outside: OutsideCommand = outside_commands()[args.command].load()
    except ImportError as exc:
        extra = f"mindbus-storage[{args.command}]"
        print(f"storage-worker {args.command}: {exc.name} is not installed: pip install '{extra}'", file=sys.stderr)
        return 1
    return outside.main(args)


async def _checked(fn: Command, checks: tuple[Stage, ...], args: argparse.Namespace, settings: Settings) -> int:
    """The command, once the systems it opens passed their start-up checks."""
    await preflight(settings, checks, debug=args.debug)
    return await fn(args, settings)


__all__ = ["COMMANDS", "main", "parser", "setup_logging"]
