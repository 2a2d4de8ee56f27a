"""Broker-free fixtures: the worker's services on a migrated SQLite file and a temp storage root."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.core.context import HandlerContext, Services
from service.files import FileStore
from service.identity import Requester
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.store.engine.writer import SingleWriter
from tests.support.databases import sqlite_url

UNIT_MAX_FILE_BYTES = 64 * 1024

MakeContext = Callable[..., HandlerContext]


@pytest.fixture(scope="session")
async def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once; each test gets a copy (migrating per test would cost half a second)."""
    folder = tmp_path_factory.mktemp("template-db")
    engine = create_engine(sqlite_url(folder))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return folder / "storage.db"


@pytest.fixture
def unit_settings(tmp_path: Path) -> Settings:
    root = tmp_path / "files"
    root.mkdir()
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=sqlite_url(tmp_path),
        storage_root=root.as_uri(),
        admins=frozenset({"admin-agent"}),
        max_file_bytes=UNIT_MAX_FILE_BYTES,
        cleanup_interval_s=0,
    )


@pytest.fixture
async def services(template_db: Path, tmp_path: Path, unit_settings: Settings) -> AsyncIterator[Services]:
    """What a running worker hands its handlers, without the broker."""
    shutil.copyfile(template_db, tmp_path / "storage.db")
    engine = create_engine(unit_settings.database_url)
    writer = SingleWriter(engine)
    await writer.start()
    files = FileStore(unit_settings.storage_root)
    files.ensure_layout()
    try:
        yield Services(settings=unit_settings, engine=engine, writer=writer, files=files)
    finally:
        await writer.stop()
        await engine.dispose()


@pytest.fixture
def storage_root(unit_settings: Settings) -> Path:
    return Path(unit_settings.storage_root.removeprefix("file://"))


@pytest.fixture
def make_ctx(services: Services) -> MakeContext:
    """``make_ctx("alice", trace="t1")``: a handler context acting as that requester (admins per settings)."""

    def make(requester_id: str | None = "agent-test", *, trace: str | None = None) -> HandlerContext:
        is_admin = requester_id is not None and requester_id in services.settings.admins
        return HandlerContext(services, Requester(id=requester_id, trace_id=trace, is_admin=is_admin))

    return make
