"""A migrated database of either backend, for tests of the storage engine below the worker."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from tests.support.databases import postgres_database, sqlite_url
from tests.support.requirements import require_postgres


@asynccontextmanager
async def migrated_engine(backend: str, template_db: Path, folder: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated database of ``backend``: a copy of the template file on SQLite, a fresh database
    migrated to head on PostgreSQL (skipped by the CI rule when no server is there)."""
    async with AsyncExitStack() as stack:
        if backend == "sqlite":
            shutil.copyfile(template_db, folder / "storage.db")
            url = sqlite_url(folder)
        else:
            await require_postgres()
            url = await stack.enter_async_context(postgres_database())
        engine = create_engine(url)
        stack.push_async_callback(engine.dispose)
        if backend != "sqlite":
            await migrate(engine)
        yield engine
