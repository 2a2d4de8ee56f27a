"""The worker's services without a broker, as the broker-free tests get them (see the ``services`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from service.core.context import HandlerContext, Services
from service.files import FileStore
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.store.engine.writer import SingleWriter

UNIT_MAX_FILE_BYTES = 64 * 1024
"""STORAGE_MAX_FILE_BYTES of the broker-free tests: small, so a test can go past it cheaply."""

MakeContext = Callable[..., HandlerContext]
"""The ``make_ctx`` fixture: ``make_ctx("alice", trace="t1")`` acts as that requester."""


@asynccontextmanager
async def running_services(settings: Settings, *, migrated: bool = True) -> AsyncIterator[Services]:
    """A writer and the file store on ``settings``' database, disposed afterwards; ``migrated=False``
    migrates it first (a fresh database rather than a copy of the migrated template)."""
    engine = create_engine(settings.database_url)
    if not migrated:
        await migrate(engine)
    writer = SingleWriter(engine)
    await writer.start()
    files = FileStore(settings.storage_root)
    files.ensure_layout()
    try:
        yield Services(settings=settings, engine=engine, writer=writer, files=files)
    finally:
        await writer.stop()
        await engine.dispose()
