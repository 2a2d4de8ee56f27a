"""(3) Our worker, exactly as ``storage-worker run`` starts it, on the benchmark's queue names.

``BENCH_WORKER_TREE=<checkout>`` runs the worker of another checkout under this same harness (an A/B of two
versions measured in one way): its ``service`` and ``contracts`` are imported in the worker process instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from bench.common import PREFETCH, Names, serve_until_terminated


def settings_for(amqp_url: str, names: Names, database_url: str, storage_root: str, node: str) -> dict[str, object]:
    return {
        "amqp_url": amqp_url,
        "exchange": names.exchange,
        "queue": names.queue,
        "dlq": names.dlq,
        "node_name": node,
        "database_url": database_url,
        "storage_root": storage_root,
        "prefetch": PREFETCH,
        "cleanup_interval_s": 0,
        "log_level": "WARNING",
        "migrate_on_start": True,  # a fresh database per run; several workers on one migrate once (advisory lock)
    }


def _use_other_tree() -> None:
    """Import the worker from ``BENCH_WORKER_TREE`` when set (in the worker process only)."""
    tree = os.environ.get("BENCH_WORKER_TREE")
    if not tree:
        return
    for name in [name for name in sys.modules if name.split(".")[0] in ("service", "contracts")]:
        del sys.modules[name]
    sys.path.insert(0, os.path.abspath(tree))


def _worker_factory() -> Callable[[object], object]:
    """``service.bootstrap.build_worker``; a checkout from before it existed constructed ``service.app.Worker``."""
    try:
        return importlib.import_module("service.bootstrap").build_worker  # type: ignore[no-any-return]
    except ModuleNotFoundError:
        return importlib.import_module("service.app").Worker  # type: ignore[no-any-return]


async def start(values: dict[str, object]) -> Callable[[], Awaitable[None]]:
    from service.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    worker: Any = _worker_factory()(Settings(**values))  # type: ignore[arg-type]
    await worker.start()
    stop: Callable[[], Awaitable[None]] = worker.stop
    return stop


def main(values: dict[str, object], ready: Connection) -> None:
    _use_other_tree()
    from service.settings import Settings

    try:
        loop = importlib.import_module("service.transport.loop")
    except ModuleNotFoundError:
        loop = importlib.import_module("service.loop")
    choice = Settings(**values).event_loop  # type: ignore[arg-type]
    serve_until_terminated(lambda: start(values), ready, lambda main: loop.run(main, choice=choice))
