"""In-process workers for the tests: settings no other test shares, several workers at once, what they settled,
and removing what they declared on the shared broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import aio_pika

from contracts import topology
from service.bootstrap import build_worker
from service.core.pipeline import Outcome
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.broker import broker_user
from tests.support.bus import Bus


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


class Declared(Protocol):
    """What a worker declares on the broker: Settings and a WorkerProcess both say it."""

    @property
    def amqp_url(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def dlq(self) -> str: ...
    @property
    def node_name(self) -> str: ...


async def delete_topology(declared: Declared) -> None:
    """Remove a test worker's queues and exchanges from the shared broker."""
    async with await aio_pika.connect(declared.amqp_url) as conn:
        channel = await conn.channel()
        own = topology.node_queue_name(declared.queue, declared.node_name)
        for queue in (declared.queue, own, declared.dlq):
            await channel.queue_delete(queue)
        for exchange in (declared.exchange, topology.dlx_name(declared.exchange)):
            await channel.exchange_delete(exchange)


@asynccontextmanager
async def running(settings: Settings, *, prepare: Callable[[Worker], object] | None = None) -> AsyncIterator[Worker]:
    """A started worker, stopped and its topology deleted on exit; ``prepare`` runs before it starts."""
    worker = build_worker(settings)
    if prepare is not None:
        prepare(worker)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
        await delete_topology(settings)


@asynccontextmanager
async def running_together(*all_settings: Settings) -> AsyncIterator[list[Worker]]:
    """Workers started at once on one queue (settings that differ in node name, say), all stopped on exit."""
    workers: list[Worker] = [build_worker(settings) for settings in all_settings]
    try:
        await asyncio.gather(*(worker.start() for worker in workers))  # both migrate: the advisory lock serialises
        yield workers
    finally:
        for worker in workers:  # stopping twice is harmless: a test may stop one itself
            await worker.stop()
        await delete_topology(all_settings[0])


class Workers:
    """Workers (each with an agent on its exchange) started with overridden settings, stopped at teardown."""

    def __init__(self, amqp_url: str, database_url: str, storage_root: Path) -> None:
        self.amqp_url, self.database_url, self.storage_root = amqp_url, database_url, storage_root
        self.running: list[tuple[Worker, Bus]] = []

    async def start(self, **overrides: object) -> tuple[Worker, Bus]:
        """Start one, e.g. ``start(max_file_bytes=1024)``; it shares the test's database and storage root."""
        settings = make_settings(self.amqp_url, self.database_url, self.storage_root, **overrides)
        worker = build_worker(settings)
        await worker.start()
        agent = await Bus(settings.amqp_url, settings.exchange, settings.dlq).open()
        self.running.append((worker, agent))
        return worker, agent

    async def stop(self, worker: Worker) -> None:
        """Stop one early (a SQLite database admits one worker at a time)."""
        for entry in list(self.running):
            if entry[0] is worker:
                self.running.remove(entry)
                await entry[1].close()
                await worker.stop()
                await delete_topology(worker.settings)

    async def stop_all(self) -> None:
        for worker, _ in reversed(list(self.running)):
            await self.stop(worker)


class Outcomes:
    """Every outcome a worker settled (observers run after the ack, replies before it), awaitable."""

    def __init__(self, worker: Worker) -> None:
        self.seen: list[Outcome] = []
        self._changed = asyncio.Event()
        worker.on_outcome.append(self._observe)

    def _observe(self, outcome: Outcome, elapsed_s: float) -> None:
        self.seen.append(outcome)
        self._changed.set()

    async def wait(self, count: int, within_s: float = 15) -> list[Outcome]:
        """At least ``count`` outcomes."""
        async with asyncio.timeout(within_s):
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.seen

    async def wait_for(self, predicate: Callable[[Outcome], bool], *, timeout_s: float = 15) -> Outcome:
        """The first outcome that matches, waiting for it if it has not come yet."""
        async with asyncio.timeout(timeout_s):
            while True:
                for outcome in self.seen:
                    if predicate(outcome):
                        return outcome
                self._changed.clear()
                await self._changed.wait()
