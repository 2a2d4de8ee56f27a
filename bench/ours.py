"""(3) Our worker, exactly as ``storage-worker run`` starts it, on the benchmark's queue names."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

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


async def start(values: dict[str, object]) -> Callable[[], Awaitable[None]]:
    from service.bootstrap import build_worker
    from service.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    worker = build_worker(Settings(**values))  # type: ignore[arg-type]
    await worker.start()
    return worker.stop


def main(values: dict[str, object], ready: Connection) -> None:
    from service.settings import Settings
    from service.transport import loop

    choice = Settings(**values).event_loop  # type: ignore[arg-type]
    serve_until_terminated(lambda: start(values), ready, lambda main: loop.run(main, choice=choice))
