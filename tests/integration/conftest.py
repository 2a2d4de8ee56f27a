"""Fixtures of the wire tests: workers with non-default settings, and a way to await one command's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from service.app import Worker
from service.pipeline import Outcome
from tests.conftest import _delete_topology, make_settings
from tests.support.bus import Bus

StartWorker = Callable[..., Awaitable[tuple[Worker, Bus]]]


@pytest.fixture
async def start_worker(amqp_url: str, database_url: str, storage_root: Path) -> AsyncIterator[StartWorker]:
    """Start a worker (and an agent on its exchange) with settings overridden, e.g. ``max_file_bytes=1024``."""
    started: list[tuple[Worker, Bus]] = []

    async def start(**overrides: object) -> tuple[Worker, Bus]:
        settings = make_settings(amqp_url, database_url, storage_root, **overrides)
        worker = Worker(settings)
        await worker.start()
        agent = await Bus(settings.amqp_url, settings.exchange, settings.dlq).open()
        started.append((worker, agent))
        return worker, agent

    try:
        yield start
    finally:
        for worker, agent in reversed(started):
            await agent.close()
            await worker.stop()
            await _delete_topology(worker.settings)


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
