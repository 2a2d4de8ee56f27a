"""The writer's group transaction and per-command savepoints, sent straight to the driver connection.

``AsyncConnection.begin_nested()`` builds a ``NestedTransaction`` and sends SAVEPOINT and RELEASE through
SQLAlchemy's whole execution layer and a greenlet each: about 80 µs per statement on this machine, against a
few µs for the statement itself in SQLite, and the writer issues two per write command. The writer's
savepoints are its own business (jobs never open nested transactions), so they go below SQLAlchemy:
SQLAlchemy still owns the outer transaction, and every savepoint is released or rolled back before it
commits. Drivers without a known direct path keep ``begin_nested()``.

On the worker's own SQLite connection the group's transaction goes below SQLAlchemy too: ``BEGIN
IMMEDIATE`` on the event loop and ``COMMIT`` in one hop to the connection's thread, instead of an
execution through SQLAlchemy for the BEGIN and a greenlet plus adapter round for the COMMIT. That was
about two thirds of a group's fixed cost, which a group of one (a quiet worker, an agent waiting on its
answer) pays in full.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

from service.store.engine.db import AsyncpgConnection
from service.store.engine.sqlite_driver import BEGIN_WRITE, LeanConnection

NAME = "storage_writer_job"
"""One name serves every job: a savepoint is always released or rolled back before the next one opens."""


class Savepoint(Protocol):
    async def release(self) -> None: ...

    async def rollback(self) -> None: ...


class Savepoints(Protocol):
    async def open(self) -> Savepoint: ...


class _SQLiteSavepoint:
    """In the writer's IMMEDIATE transaction: each statement runs on the event loop, in microseconds."""

    def __init__(self, driver: LeanConnection) -> None:
        self._conn = driver.sqlite_connection

    async def open(self) -> _SQLiteSavepoint:
        self._conn.execute(f"SAVEPOINT {NAME}")
        return self

    async def release(self) -> None:
        self._conn.execute(f"RELEASE SAVEPOINT {NAME}")

    async def rollback(self) -> None:
        self._conn.execute(f"ROLLBACK TO SAVEPOINT {NAME}")
        self._conn.execute(f"RELEASE SAVEPOINT {NAME}")


class _AsyncpgSavepoint:
    def __init__(self, driver: AsyncpgConnection) -> None:
        self._conn = driver

    async def open(self) -> _AsyncpgSavepoint:
        await self._conn.execute(f"SAVEPOINT {NAME}")
        return self

    async def release(self) -> None:
        await self._conn.execute(f"RELEASE SAVEPOINT {NAME}")

    async def rollback(self) -> None:
        await self._conn.execute(f"ROLLBACK TO SAVEPOINT {NAME}")
        await self._conn.execute(f"RELEASE SAVEPOINT {NAME}")


class _NestedTransaction:
    """Any other driver: SQLAlchemy's own nested transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._nested: AsyncTransaction | None = None

    async def open(self) -> _NestedTransaction:
        self._nested = await self._conn.begin_nested()
        return self

    async def release(self) -> None:
        assert self._nested is not None
        await self._nested.commit()

    async def rollback(self) -> None:
        assert self._nested is not None
        await self._nested.rollback()


@asynccontextmanager
async def group_transaction(conn: AsyncConnection, *, begin_with: str | None = None) -> AsyncIterator[Savepoints]:
    """One transaction for a group of jobs, committed when the block ends, rolled back when it raises.

    ``begin_with``: a statement for the transaction's first (PostgreSQL: ``SET LOCAL ...``).
    """
    sync = conn.sync_connection
    assert sync is not None  # started: the writer's connection, checked out of the pool
    driver = sync.connection.driver_connection if conn.dialect.name == "sqlite" else None
    if not isinstance(driver, LeanConnection) or driver.in_transaction:
        async with conn.begin():
            yield await savepoints_for(conn, begin_with=begin_with)
        return
    await driver.begin_write()
    try:
        yield _SQLiteSavepoint(driver)
        await driver.commit()
    except BaseException:
        await driver.rollback()
        if conn.in_transaction():  # a job's statement through SQLAlchemy began its bookkeeping: end it too
            await conn.rollback()
        raise
    if conn.in_transaction():  # nothing left open in sqlite3: no statement, no thread hop
        await conn.commit()


async def savepoints_for(conn: AsyncConnection, *, begin_with: str | None = None) -> Savepoints:
    """How the writer opens savepoints on ``conn`` (inside a transaction SQLAlchemy began)."""
    driver = (await conn.get_raw_connection()).driver_connection
    if isinstance(driver, LeanConnection):
        if not driver.in_transaction:  # pysqlite begins lazily: a first SAVEPOINT would open (and its RELEASE
            await conn.exec_driver_sql(BEGIN_WRITE)  # commit) a transaction of its own, one fsync per command
        return _SQLiteSavepoint(driver)
    if conn.dialect.driver == "asyncpg":
        pg = cast(AsyncpgConnection, driver)
        if not pg.is_in_transaction():  # SQLAlchemy's adapter begins on its first statement, and commits
            await conn.exec_driver_sql(begin_with or "SELECT 1")  # only what it began: let it begin here
        elif begin_with is not None:
            await conn.exec_driver_sql(begin_with)
        return _AsyncpgSavepoint(pg)
    if begin_with is not None:
        await conn.exec_driver_sql(begin_with)
    return _NestedTransaction(conn)
