"""Where point lookups run: connections held for the worker's life, lent one command at a time.

A pooled read costs a checkout, a reset and a checkin around the statement, about twice the cost of the
index lookup itself (the inbox check of every write, ``get_artifact``, the existence check of a
registration). On PostgreSQL it also costs round trips: the pool's liveness ping (BEGIN, ``;``,
ROLLBACK) and the BEGIN and ROLLBACK SQLAlchemy wraps around the statement, six trips for one row.

- SQLite: a point lookup runs on the event loop and never suspends (see ``sqlite_driver.point_lookup``),
  so one connection serves every command in turn. It refuses any statement that would have to leave the
  loop, so a slow query can never slip onto it.
- PostgreSQL: a few connections, each lent to one command at a time; ``PreparedRead`` runs the lookup on
  asyncpg directly, outside any transaction: one round trip. A connection the server dropped (a restart)
  is seen closed before it is lent and replaced; one that fails while lent is discarded.
- Other databases: a pooled read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.store.engine.db import read_connection, seems_open, translate_db_error
from service.store.engine.sqlite_driver import LeanConnection

log = logging.getLogger(__name__)

POSTGRES_LOOKUP_CONNECTIONS = 4
"""Enough for the lookups of a full prefetch (one round trip each, well under a millisecond), few enough to
leave the pool to the writer, the listings and cleanup."""


class PointLookups:
    def __init__(self, engine: AsyncEngine, *, postgres_connections: int = POSTGRES_LOOKUP_CONNECTIONS) -> None:
        self._engine = engine
        self._held: AsyncConnection | None = None
        self._postgres: _HeldPostgres | None = None
        self._postgres_connections = postgres_connections

    async def start(self) -> None:
        """Hold what the engine's driver allows (see the module's docstring); otherwise use the pool."""
        if self._engine.dialect.driver == "asyncpg":
            self._postgres = _HeldPostgres(self._engine, self._postgres_connections)
            return
        conn = await self._engine.connect()
        driver = (await conn.get_raw_connection()).driver_connection
        if isinstance(driver, LeanConnection):
            driver.inline_only = True
            self._held = conn
        else:
            await conn.close()

    async def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await held.close()
        postgres, self._postgres = self._postgres, None
        if postgres is not None:
            await postgres.close()

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for point lookups only (statements marked with ``point_lookup``)."""
        if self._postgres is not None:
            return self._postgres.lend()
        held = self._held
        if held is None or held.closed or held.invalidated:
            return read_connection(self._engine)
        return _Held(held)


class _Held:
    """The held SQLite connection, lent for one command's lookups.

    Nothing to end afterwards: SQLAlchemy's autobegun transaction on it is bookkeeping only, since pysqlite
    begins no transaction for a SELECT, so every lookup reads the latest commit. Database failures surface
    as UNAVAILABLE, as from a pooled read.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __aenter__(self) -> AsyncConnection:
        return self._conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is not None and (unavailable := translate_db_error(exc)) is not None:
            raise unavailable from exc


class _HeldPostgres:
    """PostgreSQL connections out of the engine's pool, kept and lent one command at a time (LIFO: the
    connection used last is warm, its prepared statements cached)."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._idle: asyncio.LifoQueue[AsyncConnection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._idle.put_nowait(None)  # opened when first needed
        self._open: set[AsyncConnection] = set()

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[AsyncConnection]:
        slot = await self._idle.get()
        kept: AsyncConnection | None = None
        try:
            conn = slot if slot is not None and seems_open(slot) else await self._replace(slot)
            try:
                yield conn
                if conn.in_transaction():  # a statement that went through SQLAlchemy began one: end it here
                    await conn.rollback()
                kept = conn
            except Exception as exc:
                kept = await self._kept_after(conn, exc)
                raise
            except BaseException:  # cancelled mid-statement: what the connection is doing is unknown
                await self._discard(conn)
                raise
        except Exception as exc:  # the lookup, or opening a connection for it
            if (unavailable := translate_db_error(exc)) is not None:
                raise unavailable from exc
            raise
        finally:
            self._idle.put_nowait(kept)

    async def _replace(self, stale: AsyncConnection | None) -> AsyncConnection:
        if stale is not None:
            await self._discard(stale)
        conn = await self._engine.connect()
        self._open.add(conn)
        return conn

    async def _kept_after(self, conn: AsyncConnection, exc: Exception) -> AsyncConnection | None:
        """Keep a connection that merely ran a refused statement; drop one the server or the driver gave up on."""
        if translate_db_error(exc) is None and seems_open(conn):
            try:
                if conn.in_transaction():
                    await conn.rollback()
                return conn
            except Exception:
                log.debug("a lookup connection could not end its transaction", exc_info=True)
        await self._discard(conn)
        return None

    async def _discard(self, conn: AsyncConnection) -> None:
        self._open.discard(conn)
        try:
            await conn.invalidate()
            await conn.close()
        except Exception:
            log.debug("discarding a lookup connection failed", exc_info=True)

    async def close(self) -> None:
        for conn in list(self._open):
            await self._discard(conn)
