"""Where point lookups run: connections held for the worker's life, lent one command at a time.

A pooled read costs a checkout, a reset and a checkin around the statement, about twice the cost of the
index lookup itself (the inbox check of every write, ``get_artifact``, the existence check of a
registration). On PostgreSQL it also costs round trips: the pool's liveness ping (BEGIN, ``;``,
ROLLBACK) and the BEGIN and ROLLBACK SQLAlchemy wraps around the statement, six trips for one row.

- SQLite: a point lookup runs on the event loop and never suspends (see ``sqlite_driver.point_lookup``),
  so one connection serves every command in turn. It refuses any statement that would have to leave the
  loop, so a slow query can never slip onto it.
- PostgreSQL: a round trip (a socket write that wakes the server, a wake-up for the answer) costs more
  than the lookup. Lookups of concurrent commands run together, as the writer groups writes: every command
  gets the same connection object, whose ``PreparedRead`` lookups are routed to ``_Together``. The lookups
  of one statement asked for in the same loop turn, or while every held connection is busy, become one
  statement for all their keys (``PreparedRead.for_keys``); a lookup without that form runs alone. Either
  way asyncpg runs it directly on one of a few held connections, outside any transaction: no ping, no
  BEGIN and ROLLBACK. A held connection the server dropped (a restart) is seen closed before it is lent
  and replaced; one that fails while lent is discarded.
- Other databases: a pooled read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.store.engine.db import (
    prepare_for_reads,
    read_connection,
    read_failure,
    read_limit_of,
    seems_open,
    translate_db_error,
)
from service.store.engine.prepared import ROUTE, Key, PreparedRead
from service.store.engine.sqlite_driver import LeanConnection
from service.store.types import AnyRow

log = logging.getLogger(__name__)

POSTGRES_LOOKUP_CONNECTIONS = 4
"""Statements in flight at once: while all run, the next lookups gather into the next statement. Few enough to
leave the pool to the writer, the listings and cleanup."""
MAX_KEYS = 500
"""Keys in one statement at most; a batch that reaches it is sent and the next lookups form another."""


class PointLookups:
    def __init__(self, engine: AsyncEngine, *, postgres_connections: int = POSTGRES_LOOKUP_CONNECTIONS) -> None:
        self._engine = engine
        self._held: AsyncConnection | None = None
        self._postgres: _HeldPostgres | None = None
        self._readers: _HeldPostgres | None = None
        self._postgres_connections = postgres_connections

    async def start(self) -> None:
        """Hold what the engine's driver allows (see the module's docstring); otherwise use the pool."""
        if self._engine.dialect.driver == "asyncpg":
            self._postgres = _HeldPostgres(self._engine, self._postgres_connections)
            self._readers = _HeldPostgres(self._engine, self._postgres_connections, reads=True)
            self._held = await self._engine.connect()  # never runs a statement itself: see the module's docstring
            self._held.info[ROUTE] = _Together(self._postgres).fetch
            event.listen(self._engine.sync_engine, "before_execute", _only_routed_lookups)
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
            if event.contains(self._engine.sync_engine, "before_execute", _only_routed_lookups):
                event.remove(self._engine.sync_engine, "before_execute", _only_routed_lookups)
            await held.close()
        for held_postgres in (self._postgres, self._readers):
            if held_postgres is not None:
                await held_postgres.close()
        self._postgres = self._readers = None

    def reads(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for any read (a listing, a count), under the read limit: on PostgreSQL one of a few
        held ones (no liveness ping per read; statements through SQLAlchemy are rolled back after), else a
        pooled one."""
        if self._readers is not None:
            return self._readers.lend()
        return read_connection(self._engine)

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for point lookups only (``PreparedRead`` of statements marked with ``point_lookup``)."""
        held = self._held
        if held is None or held.closed or held.invalidated:
            return read_connection(self._engine)
        return _Held(held)


class _Held:
    """The held connection, lent for one command's lookups.

    Nothing to end afterwards. On SQLite, SQLAlchemy's autobegun transaction on it is bookkeeping only, since
    pysqlite begins no transaction for a SELECT, so every lookup reads the latest commit; on PostgreSQL its
    lookups run on other connections. Database failures surface as UNAVAILABLE, as from a pooled read.
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
    connection used last is warm, its prepared statements cached). With ``reads``, each is under the engine's
    read limit (``STORAGE_READ_TIMEOUT_MS``), and a read past it answers DEADLINE_EXCEEDED; each plans every
    listing for its own values (``db.prepare_for_reads``)."""

    def __init__(self, engine: AsyncEngine, size: int, *, reads: bool = False) -> None:
        self._engine = engine
        self._reads = reads
        self._read_limit_ms = read_limit_of(engine) if reads else None
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
        except Exception as exc:  # the statement, or opening a connection for it
            if (failure := read_failure(exc, self._read_limit_ms)) is not None:
                raise failure from exc
            raise
        finally:
            self._idle.put_nowait(kept)

    async def _replace(self, stale: AsyncConnection | None) -> AsyncConnection:
        if stale is not None:
            await self._discard(stale)
        conn = await self._engine.connect()
        self._open.add(conn)
        if self._reads:
            await prepare_for_reads(conn)
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


def _only_routed_lookups(conn: Connection, *_: object) -> None:
    """Refuse a statement on the connection every command shares on PostgreSQL: it would run beside others'."""
    if ROUTE in conn.info:
        raise RuntimeError("only prepared point lookups run on the lookup connection")


class _Batch:
    """The keys of one statement's lookups gathered so far, and who waits for each."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: dict[Key, list[asyncio.Future[list[AnyRow]]]] = {}

    def add(self, key: Key) -> asyncio.Future[list[AnyRow]]:
        future: asyncio.Future[list[AnyRow]] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(key, []).append(future)
        return future

    def settle(self, found: dict[Key, list[AnyRow]]) -> None:
        for key, futures in self.waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key, []))

    def fail(self, exc: BaseException) -> None:
        for futures in self.waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)


class _Together:
    """Concurrent point lookups on PostgreSQL, one statement per batch of keys (see the module's docstring)."""

    def __init__(self, held: _HeldPostgres) -> None:
        self._held = held
        self._forming: dict[PreparedRead, _Batch] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def fetch(self, lookup: PreparedRead, values: Mapping[str, Any]) -> list[AnyRow]:
        if not lookup.keys:
            async with self._held.lend() as conn:
                return await lookup.all(conn, values)
        batch = self._forming.get(lookup)
        if batch is None:
            batch = self._forming[lookup] = _Batch()
            task = asyncio.create_task(self._run(lookup, batch))  # next loop turn: this turn's lookups join
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        future = batch.add(tuple(values[name] for name in lookup.keys))
        if len(batch.waiting) >= MAX_KEYS:
            self._seal(lookup, batch)
        return await asyncio.shield(future)  # a caller cancelled leaves the batch to the others

    def _seal(self, lookup: PreparedRead, batch: _Batch) -> None:
        if self._forming.get(lookup) is batch:
            del self._forming[lookup]

    async def _run(self, lookup: PreparedRead, batch: _Batch) -> None:
        try:
            async with self._held.lend() as conn:  # while every connection is busy, the batch keeps growing
                self._seal(lookup, batch)
                keys = list(batch.waiting)
                if len(keys) == 1:  # alone: the plain statement, planned as the primary-key lookup it is
                    found = {keys[0]: await lookup.all(conn, dict(zip(lookup.keys, keys[0], strict=True)))}
                else:
                    found = await lookup.for_keys(conn, keys)
        except BaseException as exc:
            self._seal(lookup, batch)
            batch.fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            batch.settle(found)
