"""``storage-worker``: run the worker, migrate the schema, check health over the bus."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from service.settings import Settings
from service.startup import (
    ALL_STAGES,
    Stage,
    StartupError,
    explain,
    load_settings,
    preflight,
    report,
    safe_url,
    unexpected,
)
from service.transport.loop import run as run_loop

log = logging.getLogger("service")

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None] | None]] = {}
CHECKS: dict[str, tuple[Stage, ...]] = {}
"""The start-up stages each subcommand checks before it runs (``service.startup``): the systems it opens."""


def command(
    name: str,
    help_text: str,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    *,
    checks: Sequence[Stage] = (),
) -> Callable[[Command], Command]:
    """Register a subcommand; other modules add theirs (cleanup, import, top) the same way.

    ``checks``: the stages (database, storage, ...) to check first, so a wrong setting is one line, not a traceback.
    """

    def register(fn: Command) -> Command:
        COMMANDS[name] = (help_text, fn, arguments)
        CHECKS[name] = tuple(checks)
        return fn

    return register


def setup_logging(settings: Settings) -> None:
    from service.logs import configure

    configure(settings.log_level, settings.log_format)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin when imported


@command("run", "run the worker until SIGTERM or SIGINT", checks=ALL_STAGES)
async def run(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import build_worker

    worker = build_worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
    except Exception as exc:  # the checks passed, yet the start failed: name the system if the error tells it
        raise (explain(exc, settings) or unexpected(Stage.START, exc)) from exc
    await stop.wait()
    log.info("stopping: finishing in-flight commands (grace %.0fs)", settings.shutdown_grace_s)
    await worker.stop()
    return 0


def _migrate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="store_true", help="only show the revision; exit 1 when not at head")


@command("migrate", "create or upgrade the database schema (Alembic, to head)", _migrate_args, checks=(Stage.DATABASE,))
async def migrate_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from service.store.engine.db import create_engine
    from service.store.engine.schema import migrate, state

    engine = create_engine(settings.database_url)
    try:  # a schema newer than this code (SchemaNotReady) is told by ``main``, exit code 4
        if args.status:
            found = await state(engine)
            print(f"schema at head {', '.join(found.heads)}" if found.up_to_date else found.describe())
            return 0 if found.up_to_date else 1
        reached = await migrate(engine)
    finally:
        await engine.dispose()
    print(f"schema up to date on {_safe(settings.database_url)} (revision {', '.join(reached.current)})")
    return 0


def _health_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the ping reply")


@command("health", "send ping over the bus; exit 0 when answered in time", _health_args)
async def health(args: argparse.Namespace, settings: Settings) -> int:
    from service.ops.health import ping_over_bus

    ok, reason = await ping_over_bus(settings, timeout_s=args.timeout)
    print(reason)
    return 0 if ok else 1


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    return safe_url(url)


def _load_plugins() -> None:
    """Subcommands that live beside their domain register themselves on import."""
    import importlib

    for module in ("service.cli.maintenance", "service.cli.importer", "service.cli.top"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


DEBUG_HELP = "on a failed start, print the traceback above the one-line reason"


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0, 1 for a command's own "no" or an unexpected failure, and one per known start-up
    mistake (2 and up, the table in ``service.startup``)."""
    _load_plugins()
    parser = argparse.ArgumentParser(prog="storage-worker", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if arguments is not None:
            arguments(p)
    args = parser.parse_args(argv)
    _, fn, _ = COMMANDS[args.command]
    try:
        settings = load_settings()
    except StartupError as error:
        return report(error, debug=args.debug)
    setup_logging(settings)
    try:
        return run_loop(_checked(fn, args, settings), choice=settings.event_loop)
    except StartupError as error:
        return report(error, debug=args.debug)
    except Exception as exc:  # a known mistake met past the checks (the database gone mid-command) is one line too
        known = explain(exc, settings)
        if known is None:
            raise
        return report(known, debug=args.debug)


async def _checked(fn: Command, args: argparse.Namespace, settings: Settings) -> int:
    """The command, once the systems it opens passed their start-up checks."""
    await preflight(settings, CHECKS.get(args.command, ()), debug=args.debug)
    return await fn(args, settings)
