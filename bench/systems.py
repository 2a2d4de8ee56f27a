"""Starting and stopping the systems under test, each with its own queue, data folder and database."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench import echo, naive, ours
from bench.common import Names, ServerProcess, delete_topology, kind_on

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@localhost/postgres"
"""Where a run that asks for PostgreSQL without ``--database-url`` creates its databases."""


def is_postgres(url: str | None) -> bool:
    return url is not None and make_url(url).get_backend_name() == "postgresql"


def database_of(url: str | None) -> str:
    """``postgresql`` or ``sqlite``: the database a system started with ``url`` uses."""
    return "postgresql" if is_postgres(url) else "sqlite"


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class Database:
    """A fresh database for one system: a SQLite file in its folder, or a new PostgreSQL database."""

    url: str
    pg_name: str | None = None
    admin_url: str | None = None

    @classmethod
    def fresh(cls, folder: Path, base_url: str | None) -> Database:
        if not is_postgres(base_url):
            return cls(f"sqlite+aiosqlite:///{folder / 'storage.db'}")
        assert base_url is not None
        name = f"bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(base_url, f'CREATE DATABASE "{name}"'))
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
        return cls(url, name, base_url)

    def drop(self) -> None:
        if self.pg_name is not None and self.admin_url is not None:
            asyncio.run(_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))


@dataclass
class System:
    """One running system: its processes (several workers share one queue on PostgreSQL)."""

    kind: str
    amqp_url: str
    names: Names
    folder: Path
    database: Database | None = None
    processes: list[ServerProcess] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    """The worker node names started (each has its own command queue to delete at the end)."""

    @property
    def backend(self) -> str | None:
        """``sqlite`` or ``postgresql``; None for a system without a database (the echoes)."""
        if self.database is None:
            return None
        return "postgresql" if self.database.pg_name is not None else "sqlite"

    @property
    def storage_root(self) -> str:
        return (self.folder / "files").as_uri()

    @property
    def temp_dir(self) -> str:
        return str(self.folder / "files" / "temp")

    def rss_bytes(self) -> int:
        """Resident memory of the server process (the sum when several workers run)."""
        return sum(p.rss_bytes() for p in self.processes)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server processes used so far."""
        return sum(p.cpu_seconds() for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()

    def close(self) -> None:
        self.stop()
        asyncio.run(delete_topology(self.amqp_url, self.names, self.nodes))
        if self.database is not None:
            self.database.drop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _folder(kind: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"mindbus-bench-{kind}-"))
    (folder / "files" / "temp").mkdir(parents=True)
    return folder


def start_echo(amqp_url: str, loop: str = "asyncio") -> System:
    """The plain echo, a reference line: ``echo`` on asyncio's loop, ``echo-uvloop`` on uvloop."""
    kind = "echo" if loop == "asyncio" else f"echo-{loop}"
    system = System(kind, amqp_url, Names.fresh(kind), _folder(kind))
    system.processes.append(ServerProcess(echo.main, amqp_url, system.names, loop, name=f"bench-{kind}").start())
    return system


def start_lean_echo(amqp_url: str) -> System:
    """The lean echo (``echo-lean``): the broker's limit, the reference of every ratio."""
    kind = "echo-lean"
    system = System(kind, amqp_url, Names.fresh(kind), _folder(kind))
    system.processes.append(ServerProcess(echo.main_lean, amqp_url, system.names, name=f"bench-{kind}").start())
    return system


def start_naive(amqp_url: str, database_url: str | None, *, indexed: bool = False) -> System:
    """The naive peer as written; ``indexed``: with the composite index a careful developer adds (``naive-indexed``).

    On PostgreSQL (``database_url`` one) the kind ends in ``-pg``.
    """
    kind = kind_on("naive-indexed" if indexed else "naive", database_of(database_url))
    system = System(kind, amqp_url, Names.fresh(kind), _folder(kind))
    with _closed_on_failure(system):
        system.database = Database.fresh(system.folder, database_url)
        process = ServerProcess(
            naive.main, amqp_url, system.names, system.database.url, system.storage_root, indexed, name=f"bench-{kind}"
        )
        system.processes.append(process.start())
    return system


def start_worker(
    amqp_url: str,
    database_url: str | None,
    workers: int = 1,
    database: Database | None = None,
    folder: Path | None = None,
) -> System:
    kind = kind_on("worker", database_of(database.url if database else database_url))
    system = System(kind, amqp_url, Names.fresh(kind), folder or _folder(kind))
    with _closed_on_failure(system):
        system.database = database or Database.fresh(system.folder, database_url)
        spawn_workers(system, workers)
    return system


@contextmanager
def _closed_on_failure(system: System) -> Iterator[None]:
    """A system that fails to start leaves nothing behind: no process, queue, database or folder."""
    try:
        yield
    except BaseException:
        system.close()
        raise


def spawn_workers(system: System, workers: int) -> None:
    assert system.database is not None
    for index in range(workers):
        system.nodes.append(node := f"bench-{index}")
        values = ours.settings_for(system.amqp_url, system.names, system.database.url, system.storage_root, node)
        system.processes.append(ServerProcess(ours.main, values, name=f"bench-worker-{index}").start())
