"""Fixtures of the fault suite: a private RabbitMQ node, workers as real processes, a lean agent.

Every test module here is marked ``faults``. The node is private (spare ports, own data) so the load and the
kills never reach the machine's shared broker; a test that kills the broker starts its own node on top.
Without ``rabbitmq-server`` installed the suite cannot run: a skip locally, a failure in CI
(``tests.support.requirements``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.support.lean_bus import LeanBus
from tests.support.private_broker import PrivateBroker
from tests.support.requirements import require_rabbitmq_server
from tests.support.tally import REPORTS
from tests.support.worker_process import WorkerProcess, worker_env

SpawnWorker = Callable[..., Awaitable[WorkerProcess]]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("fault tests: figures")
        for tally in REPORTS:
            terminalreporter.write_line(str(tally.figures.get("_line") or tally.line()))


@pytest.fixture(scope="session")
async def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateBroker]:
    """A private node shared by the fault tests that do not kill the broker (it has the management API)."""
    require_rabbitmq_server()
    async with PrivateBroker(tmp_path_factory.mktemp("rabbit")) as broker:
        yield broker


@pytest.fixture
async def spawn_worker(fault_broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """Start worker processes on the private node (each with its own names, database and files)."""
    spawned: list[WorkerProcess] = []

    async def spawn(*, faults: str = "", amqp_url: str | None = None, **settings: str) -> WorkerProcess:
        folder = tmp_path / f"worker{len(spawned)}"
        folder.mkdir()
        process = WorkerProcess(worker_env(amqp_url or fault_broker.amqp_url, folder, **settings), folder)
        spawned.append(process)
        await process.start(faults=faults)
        return process

    try:
        yield spawn
    finally:
        for process in spawned:
            await process.kill()


@pytest.fixture
async def lean_bus_for() -> AsyncIterator[Callable[[WorkerProcess], Awaitable[LeanBus]]]:
    """A lean agent on a worker's exchange (opened after the worker declared it)."""
    opened: list[LeanBus] = []

    async def open_for(worker: WorkerProcess) -> LeanBus:
        bus = await LeanBus(worker.env["AMQP_URL"], worker.exchange).__aenter__()
        opened.append(bus)
        return bus

    try:
        yield open_for
    finally:
        for bus in opened:
            await bus.__aexit__(None, None, None)
