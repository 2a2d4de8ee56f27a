"""Fixtures shared by the whole suite (helpers live in ``tests.support``).

- a real broker and a fresh database per test (SQLite and PostgreSQL), a worker, a raw agent on its exchange,
  more workers with other settings, and what they settled;
- broker-free: the worker's services on a migrated SQLite copy, and handler contexts acting as a requester;
- the fault fixtures: a private RabbitMQ node, workers as real processes, a lean agent.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.bootstrap import build_worker
from service.core.context import HandlerContext, Services
from service.identity import Requester
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.transport.worker import Worker
from tests.support.bus import Bus
from tests.support.databases import BACKENDS, postgres_database, sqlite_url
from tests.support.lean_bus import LeanBus
from tests.support.private_broker import PrivateBroker
from tests.support.requirements import require_postgres, require_rabbitmq, require_rabbitmq_server
from tests.support.services import UNIT_MAX_FILE_BYTES, MakeContext, running_services
from tests.support.tally import REPORTS
from tests.support.worker_process import SpawnWorker, WorkerProcess, worker_env
from tests.support.workers import Outcomes, Workers, delete_topology, make_settings


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault tests' figures, repeated where they are seen without ``-s``."""
    if REPORTS:
        terminalreporter.section("fault tests: figures")
        for tally in REPORTS:
            terminalreporter.write_line(str(tally.figures.get("_line") or tally.line()))


# --- a broker, a database, a worker --------------------------------------------------------------------------


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
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, for tests that need several workers on one database."""
    await require_postgres()
    async with postgres_database() as url:
        yield url


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    return root.resolve()


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
        await delete_topology(settings)


@pytest.fixture
async def bus(worker: Worker) -> AsyncIterator[Bus]:
    agent = await Bus(worker.settings.amqp_url, worker.settings.exchange, worker.settings.dlq).open()
    try:
        yield agent
    finally:
        await agent.close()


@pytest.fixture
async def workers(amqp_url: str, database_url: str, storage_root: Path) -> AsyncIterator[Workers]:
    """Start workers with non-default settings on the test's database (both backends)."""
    started = Workers(amqp_url, database_url, storage_root)
    try:
        yield started
    finally:
        await started.stop_all()


@pytest.fixture
def outcomes(worker: Worker) -> Outcomes:
    """Observe the ``worker`` fixture's settled commands (after reply and ack)."""
    return Outcomes(worker)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of our own on the test's database (disposed afterwards)."""
    created = create_engine(database_url)
    try:
        yield created
    finally:
        await created.dispose()


# --- broker-free: the worker's services ----------------------------------------------------------------------


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
def unit_settings(tmp_path: Path, storage_root: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=sqlite_url(tmp_path),
        storage_root=storage_root.as_uri(),
        admins=frozenset({"admin-agent"}),
        max_file_bytes=UNIT_MAX_FILE_BYTES,
        cleanup_interval_s=0,
    )


@pytest.fixture
async def services(template_db: Path, tmp_path: Path, unit_settings: Settings) -> AsyncIterator[Services]:
    """What a running worker hands its handlers, without the broker."""
    shutil.copyfile(template_db, tmp_path / "storage.db")
    async with running_services(unit_settings) as services:
        yield services


@pytest.fixture
def make_ctx(services: Services) -> MakeContext:
    """``make_ctx("alice", trace="t1")``: a handler context acting as that requester (admins per settings)."""

    def make(requester_id: str | None = "agent-test", *, trace: str | None = None) -> HandlerContext:
        is_admin = requester_id is not None and requester_id in services.settings.admins
        return HandlerContext(services, Requester(id=requester_id, trace_id=trace, is_admin=is_admin))

    return make


# --- the fault fixtures: private node, worker processes --------------------------------------------------------


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
