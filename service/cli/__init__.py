"""``storage-worker``: run the worker, migrate the schema, check health over the bus."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from service.settings import Settings
from service.transport.loop import run as run_loop

log = logging.getLogger("service")

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None] | None]] = {}


def command(
    name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Command], Command]:
    """Register a subcommand; other modules add theirs (cleanup, import, top) the same way."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (help_text, fn, arguments)
        return fn

    return register


def setup_logging(settings: Settings) -> None:
    from service.logs import configure

    configure(settings.log_level, settings.log_format)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin when imported


@command("run", "run the worker until SIGTERM or SIGINT")
async def run(args: argparse.Namespace, settings: Settings) -> int:
    from service.store.engine.lock import DatabaseLocked
    from service.store.engine.schema import SchemaNotReady
    from service.transport.worker import Worker

    worker = Worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
    except DatabaseLocked as exc:
        print(f"storage-worker: {exc}", file=sys.stderr)
        return 2
    except SchemaNotReady as exc:
        print(f"storage-worker: {exc}", file=sys.stderr)
        return 4
    except (ConnectionError, OSError) as exc:
        print(f"storage-worker: cannot reach RabbitMQ at {_safe(settings.amqp_url)}: {exc}", file=sys.stderr)
        return 3
    await stop.wait()
    log.info("stopping: finishing in-flight commands (grace %.0fs)", settings.shutdown_grace_s)
    await worker.stop()
    return 0


def _migrate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="store_true", help="only show the revision; exit 1 when not at head")


@command("migrate", "create or upgrade the database schema (Alembic, to head)", _migrate_args)
async def migrate_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from service.store.engine.db import create_engine
    from service.store.engine.schema import SchemaNotReady, migrate, state

    engine = create_engine(settings.database_url)
    try:
        if args.status:
            found = await state(engine)
            print(f"schema at head {', '.join(found.heads)}" if found.up_to_date else found.describe())
            return 0 if found.up_to_date else 1
        reached = await migrate(engine)
    except SchemaNotReady as exc:
        print(f"storage-worker: {exc}", file=sys.stderr)
        return 4
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
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _load_plugins() -> None:
    """Subcommands that live beside their domain register themselves on import."""
    import importlib

    for module in ("service.cli.maintenance", "service.cli.importer", "service.cli.top"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="storage-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if arguments is not None:
            arguments(p)
    args = parser.parse_args(argv)
    settings = Settings()
    setup_logging(settings)
    _, fn, _ = COMMANDS[args.command]
    return run_loop(fn(args, settings), choice=settings.event_loop)
