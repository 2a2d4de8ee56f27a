"""Fixtures: a real broker, a fresh database per test (SQLite and PostgreSQL), a worker, a raw agent."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.bootstrap import build_worker
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.broker import broker_user
from tests.support.bus import Bus
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.requirements import require_postgres, require_rabbitmq

BACKENDS = [b.strip() for b in os.environ.get("STORAGE_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with require_rabbitmq() as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each backend under test."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    await require_postgres()
    url, name = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(name)


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    return root.resolve()


def make_settings(amqp_url: str, database_url: str, storage_root: Path, **overrides: object) -> Settings:
    """Settings with names nobody else uses, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "amqp_url": amqp_url,
        "exchange": f"test.{suffix}",
        "queue": f"test.{suffix}.commands",
        "dlq": f"test.{suffix}.dlq",
        "database_url": database_url,
        "storage_root": storage_root.as_uri(),
        "cleanup_interval_s": 0,
        "admins": frozenset({broker_user(amqp_url)}),  # admin = user_id of the test broker's user (ADMIN_AMQP)
        "migrate_on_start": True,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(amqp_url: str, database_url: str, storage_root: Path) -> Settings:
    return make_settings(amqp_url, database_url, storage_root)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    running = build_worker(settings)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        await _delete_topology(settings)


@pytest.fixture
async def bus(worker: Worker) -> AsyncIterator[Bus]:
    agent = await Bus(worker.settings.amqp_url, worker.settings.exchange, worker.settings.dlq).open()
    try:
        yield agent
    finally:
        await agent.close()


async def _delete_topology(settings: Settings) -> None:
    import aio_pika

    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        for queue in (settings.queue, settings.dlq):
            await channel.queue_delete(queue)
        for exchange in (settings.exchange, settings.dlx):
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()
