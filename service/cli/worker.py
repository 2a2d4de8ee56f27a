"""``storage-worker run``, ``migrate``, ``health``, ``signal``: the worker, its schema, a ping, CONTROL signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from contracts import ControlScope, topology
from service.settings import Settings
from service.startup import Stage, explain, safe_url, unexpected

log = logging.getLogger("service")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from service.bootstrap import build_worker

    worker = build_worker(settings)
    stop = worker.stop_requested  # SIGTERM, SIGINT or a CONTROL ``shutdown`` signal
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
    except Exception as exc:  # the checks passed, yet the start failed: name the system if the error tells it
        with contextlib.suppress(Exception):  # a channel the broker closed would be logged at exit otherwise
            await worker.broker.stop()
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


def signal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scope", choices=[scope.value for scope in ControlScope], help="what the nodes should do")
    parser.add_argument(
        "--target",
        default=None,
        help="'all', 'storage' or a node name (default: STORAGE_NODE_NAME); 'storage' reaches every storage node",
    )
    parser.add_argument("--reason", default=None, help="why, for the nodes' logs")


async def signal_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from service.ops.health import send_signal

    target = args.target or settings.node_name
    key = await send_signal(settings, target, ControlScope(args.scope), args.reason)
    print(f"sent {key} as {topology.broker_user(settings.amqp_url)} (obeyed only if that user is in STORAGE_ADMINS)")
    return 0
