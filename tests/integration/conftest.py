"""Fixtures of the wire tests: workers with non-default settings, and a way to await one command's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.bootstrap import build_worker
from service.core.pipeline import Outcome
from service.transport.worker import Worker
from tests.conftest import _delete_topology, make_settings
from tests.support.bus import Bus


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
                await _delete_topology(worker.settings)

    async def stop_all(self) -> None:
        for worker, _ in reversed(list(self.running)):
            await self.stop(worker)


@pytest.fixture
async def workers(amqp_url: str, database_url: str, storage_root: Path) -> AsyncIterator[Workers]:
    """Start workers with non-default settings on the test's database (both backends)."""
    started = Workers(amqp_url, database_url, storage_root)
    try:
        yield started
    finally:
        await started.stop_all()


class Outcomes:
    """Every outcome the worker settled, with a way to await the next one that matches."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []
        self._changed = asyncio.Event()

    def __call__(self, outcome: Outcome, elapsed: float) -> None:
        self.seen.append(outcome)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Outcome], bool], *, timeout_s: float = 15) -> Outcome:
        async with asyncio.timeout(timeout_s):
            while True:
                for outcome in self.seen:
                    if predicate(outcome):
                        return outcome
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def outcomes(worker: Worker) -> Outcomes:
    """Observe the ``worker`` fixture's settled commands (after reply and ack)."""
    observer = Outcomes()
    worker.on_outcome.append(observer)
    return observer
