"""aiosqlite with one thread hop per statement: how the worker talks to SQLite on its hot path.

aiosqlite runs every call of a sqlite3 connection on that connection's thread, and SQLAlchemy's adapter
makes four such calls per statement (open a cursor, execute, fetch, close) plus a rollback when a read
connection goes back to the pool. Each hop wakes a thread and then the event loop; on a busy 2-core
machine that costs more than the SQL itself. This connection runs a statement, fetches its rows and
closes its cursor in a single hop, and skips the rollback when no transaction is open. Semantics are
sqlite3's own: the same thread executes the same calls in the same order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from service.store.types import AnySelect

_Description = tuple[tuple[str, None, None, None, None, None, None], ...] | None
"""A DB-API cursor description as sqlite3 gives it: one (name, None x 6) per column; None for no rows."""
_Result = tuple[_Description, int, int | None, list[Any]]
BEGIN_WRITE = "BEGIN IMMEDIATE"
"""How a group of writes begins: the write lock at once, taken on the event loop when it is free."""
INLINE_MARK = "/* point lookup */"
_INLINE_SELECT = f"SELECT {INLINE_MARK}"

S = TypeVar("S", bound=AnySelect)
T = TypeVar("T")


def point_lookup(statement: S) -> S:
    """Mark a SELECT that reads a handful of rows through an index: on SQLite it runs on the event loop.

    Only for statements whose cost does not grow with the table (primary or unique key lookups). A WAL
    reader never waits for the writer, so such a lookup takes microseconds, less than the thread switch.
    """
    return statement.prefix_with(INLINE_MARK, dialect="sqlite")


def _run(conn: sqlite3.Connection, sql: str, parameters: Any, many: bool) -> _Result:
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class LeanCursor:
    """The part of ``aiosqlite.Cursor`` SQLAlchemy uses, with the whole result read in the executing hop."""

    arraysize = 1

    def __init__(self, connection: LeanConnection) -> None:
        self._connection = connection
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> LeanCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def _call(self, sql: str, parameters: Any, many: bool) -> LeanCursor:
        connection = self._connection
        result: _Result
        if sql == BEGIN_WRITE and not connection.in_transaction and connection.begin_now():
            result = (None, -1, None, [])
        elif connection.in_transaction or sql.startswith(_INLINE_SELECT):
            # Inside the writer's group transaction (begun IMMEDIATE, so it holds the write lock and cannot
            # wait on another writer), and for point lookups marked with point_lookup(): short statements
            # run right here, sparing two thread switches each (a switch costs more than the lookup).
            # Everything else, and the commit that syncs to disk, goes to the connection's thread.
            result = _run(connection._conn, sql, parameters, many)
        elif connection.inline_only:
            raise RuntimeError(f"only point lookups run on this connection, not: {sql[:80]}")
        else:
            result = await connection._execute(_run, connection._conn, sql, parameters, many)
        self.description, self.rowcount, self.lastrowid, self._rows = result
        return self

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> LeanCursor:
        return await self._call(sql, parameters, False)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> LeanCursor:
        return await self._call(sql, list(parameters), True)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = self.arraysize if size is None else size
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> Sequence[Any]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []


class LeanConnection(aiosqlite.Connection):
    inline_only = False
    """Set on a connection shared by every command (``lookups.PointLookups``): it must never leave the loop."""

    if TYPE_CHECKING:
        # aiosqlite leaves this unannotated: it runs fn(*args) on the connection's thread and returns its result.
        async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    # SQLAlchemy's async adapter calls cursor() and enters the result (its AsyncIODBAPIConnection protocol);
    # aiosqlite's cursor() is a coroutine that costs a thread hop, so this one is deliberately synchronous.
    def cursor(self) -> LeanCursor:  # type: ignore[override]
        return LeanCursor(self)

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for statements run on the event loop inside the write transaction."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open. Safe to read from the event loop: sqlite3 only reads a flag, and
        every call on this connection is awaited before the next, so none is running on its thread now."""
        return self._connection is not None and self._connection.in_transaction

    async def rollback(self) -> None:
        if self.in_transaction:
            await super().rollback()

    async def commit(self) -> None:
        """Commit on the connection's thread (the fsync); nothing to do, and no thread hop, when none is open."""
        if self.in_transaction:
            await super().commit()

    async def begin_write(self) -> None:
        """``BEGIN IMMEDIATE``: on the event loop when the write lock is free, else waiting for it on the thread."""
        if not self.begin_now():
            await self._execute(self._conn.execute, BEGIN_WRITE)

    def begin_now(self) -> bool:
        """Take the write lock here when it is free (the usual case: one writer per database file); False when
        another connection holds it, and the BEGIN then waits for it (busy_timeout) on the connection's thread."""
        conn = self._conn
        (waited,) = conn.execute("PRAGMA busy_timeout").fetchone()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute(BEGIN_WRITE)
        except sqlite3.OperationalError:
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(waited)}")
        return True


def lean_connector(path: Path, **connect_args: Any) -> Callable[[], Awaitable[aiosqlite.Connection]]:
    """An ``async_creator`` for ``create_async_engine``: opens a :class:`LeanConnection` on ``path``."""

    def create() -> Awaitable[aiosqlite.Connection]:
        # Not a coroutine: an aiosqlite connection is itself awaitable, and awaiting it opens it.
        connection = LeanConnection(partial(sqlite3.connect, str(path), **connect_args), iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy does: never keep the process alive for it
        return connection

    return create
