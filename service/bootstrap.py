"""The composition step: the one place the worker's parts are built and wired together.

``open_services`` builds the long-lived stores (the SQLite lock, engine and schema, files, single writer,
point lookups) the same way for the worker, the CLIs and the benchmarks. ``build_worker`` makes the
transport, hands it the action table, and installs operations (log, metrics, registry, tracing) and
maintenance (recovery, periodic cleanup) on it as the settings ask. Nothing registers itself on import.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from service.core.actions import check
from service.core.context import Services
from service.files import FileStore
from service.handlers import ACTIONS
from service.maintenance import Maintenance
from service.ops.control import ControlSignals
from service.ops.operating import Operations, install
from service.settings import Settings
from service.store.engine.db import create_engine, is_sqlite, sqlite_path
from service.store.engine.lock import DatabaseLock
from service.store.engine.lookups import PointLookups
from service.store.engine.schema import prepare
from service.store.engine.writer import SingleWriter
from service.transport.worker import Worker


async def open_services(
    settings: Settings,
    *,
    on_batch: Callable[[int], None] | None = None,
    busy: Callable[[], int] | None = None,
    hold_lookups: bool = False,
) -> Services:
    """Lock (SQLite), engine, schema, files, writer and, for a worker, held point lookups; closed by ``close_services``.

    A new embedded SQLite database gets its schema; anything else migrates only when asked to.
    """
    lock: DatabaseLock | None = None
    if (db_file := sqlite_path(settings.database_url)) is not None:
        lock = DatabaseLock(db_file)
        lock.acquire()
    engine = create_engine(settings.database_url, read_timeout_ms=settings.read_timeout_ms)
    try:
        await prepare(
            engine, migrate_on_start=settings.migrate_on_start, create_if_empty=is_sqlite(settings.database_url)
        )
        files = FileStore(settings.storage_root)
        await asyncio.to_thread(files.ensure_layout)
    except BaseException:
        await engine.dispose()
        if lock is not None:
            lock.release()
        raise
    writer = SingleWriter(
        engine,
        batch_max=settings.write_batch_max,
        on_batch=on_batch,
        gather_s=settings.write_gather_ms / 1000,
        busy=busy,
    )
    await writer.start()
    lookups = None
    if hold_lookups:
        lookups = PointLookups(engine)
        await lookups.start()
    return Services(settings=settings, engine=engine, writer=writer, files=files, lookups=lookups, lock=lock)


async def close_services(services: Services) -> None:
    """The writer drains, then the pool closes and the SQLite lock is released."""
    await services.writer.stop()
    if services.lookups is not None:
        await services.lookups.close()
    await services.engine.dispose()
    if services.lock is not None:
        services.lock.release()
        services.lock = None


@asynccontextmanager
async def standalone_services(settings: Settings) -> AsyncIterator[Services]:
    """The stores a worker would open, without the broker: for the CLIs and the benchmarks."""
    services = await open_services(settings)
    try:
        yield services
    finally:
        await close_services(services)


class StorageNode(Worker):
    """A worker with its operations and maintenance installed, as ``build_worker`` makes it."""

    operations: Operations
    maintenance: Maintenance
    control: ControlSignals


def build_worker(settings: Settings | None = None) -> StorageNode:
    """The worker for ``storage-worker run``, the tests and the benchmarks: one composition for all."""
    check(ACTIONS)
    settings = settings or Settings()
    node = StorageNode(settings, ACTIONS, open_services=_worker_services, close_services=close_services)
    node.operations = install(node)
    node.maintenance = Maintenance()
    node.on_started.append(lambda worker: node.maintenance.start(_services(worker)))
    node.on_stopping.append(lambda worker: node.maintenance.stop())
    node.control = ControlSignals(node, node.maintenance)
    node.control.attach()
    return node


async def _worker_services(settings: Settings, on_batch: Callable[[int], None], busy: Callable[[], int]) -> Services:
    return await open_services(settings, on_batch=on_batch, busy=busy, hold_lookups=True)


def _services(worker: Worker) -> Services:
    assert worker.services is not None, "services are open once the worker has started"
    return worker.services
