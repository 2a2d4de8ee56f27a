"""The whole start: the stage checks in start order, and the classification of what the real start raised."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Sequence

from service.settings import Settings
from service.startup.broker import broker_error, check_broker, queue_mismatch
from service.startup.codes import ALL_STAGES, Exit, Stage, StartupError, caused
from service.startup.database import check_database, database_error
from service.startup.ports import check_ports, port_error
from service.startup.storage import check_storage, storage_error


async def preflight(settings: Settings, stages: Sequence[Stage] = ALL_STAGES, *, debug: bool = False) -> None:
    """Run the checks of ``stages`` in start order; the first failing one raises its ``StartupError``."""
    checks: dict[Stage, Callable[[], Awaitable[object]]] = {
        Stage.DATABASE: lambda: check_database(settings),
        Stage.STORAGE: lambda: asyncio.to_thread(check_storage, settings, debug=debug),
        Stage.BROKER: lambda: check_broker(settings, debug=debug),
        Stage.PORTS: lambda: asyncio.to_thread(check_ports, settings),
    }
    for stage in ALL_STAGES:
        if stage in stages and stage in checks:
            await checks[stage]()


def explain(exc: BaseException, settings: Settings) -> StartupError | None:
    """The ``StartupError`` for an exception the real start raised, when it is a known mistake; else None.

    The checks catch these first; this covers what changed between them and the start (a port taken
    meanwhile) and what only the start meets (another worker on the SQLite file, a schema behind).
    """
    from service.store.engine.lock import DatabaseLocked
    from service.store.engine.schema import SchemaNotReady

    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, DatabaseLocked):
        return caused(exc, Stage.DATABASE, str(exc), None, Exit.DATABASE_LOCKED)
    if isinstance(exc, SchemaNotReady):
        return caused(exc, Stage.DATABASE, str(exc), None, Exit.SCHEMA_NOT_READY)
    from aio_pika.exceptions import AMQPError

    if isinstance(exc, AMQPError):
        return queue_mismatch(exc, settings) or broker_error(exc, settings.amqp_url)
    if (found := storage_error(exc, settings.storage_root, checking=False)) is not None:
        return found
    if settings.metrics_port is not None and isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return port_error(exc, settings.metrics_host, settings.metrics_port)
    return database_error(exc, settings.database_url, connecting=False)
