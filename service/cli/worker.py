"""``storage-worker run``, ``migrate`` and ``health``: the worker itself, its schema, and a ping over the bus."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from service.settings import Settings
from service.startup import Stage, explain, safe_url, unexpected

log = logging.getLogger("service")


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


def migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="store_true", help="only show the revision; exit 1 when not at head")


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
    print(f"schema up to date on {safe_url(settings.database_url)} (revision {', '.join(reached.current)})")
    return 0


def health_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the ping reply")


async def health(args: argparse.Namespace, settings: Settings) -> int:
    from service.ops.health import ping_over_bus

    ok, reason = await ping_over_bus(settings, timeout_s=args.timeout)
    print(reason)
    return 0 if ok else 1
