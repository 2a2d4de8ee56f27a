"""The hottest statements, compiled once by SQLAlchemy and run by sqlite3 itself where that is safe.

SQLAlchemy's execution layer (an execution context, events, a result object, a greenlet switch) costs
about 60 µs per statement here, several times what SQLite needs for the INSERT itself, and every write
command runs two to four such statements. A ``PreparedWrite`` keeps SQLAlchemy for what it is for: it
compiles the statement for the dialect once per set of parameter names and converts every value with
the column type's own bind processor (JSON, timestamps, UUIDs come out exactly as SQLAlchemy stores
them). On the writer's SQLite connection, inside its transaction, where statements already run on the
event loop (see ``sqlite_driver``), the compiled SQL then goes straight to sqlite3; driver errors are
wrapped as SQLAlchemy's own, so error handling is unchanged. Anywhere else (PostgreSQL, a connection
outside the writer) the statement executes through SQLAlchemy as usual. Statements whose compilation
needs Python-side defaults also take SQLAlchemy's path. SQLAlchemy's cursor events do not see the
direct statements.

``PreparedRead`` does the same for point lookups (statements marked with ``sqlite_driver.point_lookup``,
which run on the event loop on any SQLite connection): the row's values go through each column type's
result processor, and the rows it returns answer to the same attribute names as SQLAlchemy's.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from service.store.engine.sqlite_driver import LeanConnection
from service.store.types import AnyRow, AnySelect

Processor = Callable[[Any], Any] | None


class _Compiled:
    __slots__ = ("_compiled", "_processors", "sql")

    def __init__(self, statement: UpdateBase | AnySelect, dialect: Dialect, keys: list[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        assert isinstance(compiled, SQLCompiler)  # a statement (not DDL) compiles with the dialect's SQL compiler
        self.sql: str | None = None
        if compiled.insert_prefetch or compiled.update_prefetch or dialect.paramstyle != "qmark":
            return  # Python-side defaults to compute, or not SQLite's positional parameters: SQLAlchemy's path
        self.sql = compiled.string
        self._compiled = compiled
        positions = compiled.positiontup
        assert positions is not None  # qmark parameters are positional: the compiler lists them in order
        self._processors: list[tuple[str, str, Processor]] = [
            (name, compiled.binds[name].key, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in positions
        ]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values in the statement's order, each through its type's processor."""
        try:  # every parameter given by its key: the usual case, without SQLAlchemy's general mapping
            return tuple(values[k] if convert is None else convert(values[k]) for _, k, convert in self._processors)
        except KeyError:  # a parameter left to its bindparam's own value
            named = self._compiled.construct_params(values)
            return tuple(named[n] if convert is None else convert(named[n]) for n, _, convert in self._processors)


class PreparedWrite:
    """An INSERT or UPDATE executed with a row (or rows) of parameters; ``execute`` returns the rowcount."""

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    async def execute(self, conn: AsyncConnection, values: Mapping[str, Any]) -> int:
        raw = _inline_sqlite(conn)
        compiled = self._for(conn.dialect, values) if raw is not None else None
        if raw is None or compiled is None or compiled.sql is None:
            return int((await conn.execute(self.statement, dict(values))).rowcount)
        try:
            return raw.execute(compiled.sql, compiled.parameters(values)).rowcount
        except sqlite3.Error as exc:
            raise DBAPIError.instance(compiled.sql, dict(values), exc, sqlite3.Error) from exc

    async def execute_many(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        raw = _inline_sqlite(conn)
        compiled = self._for(conn.dialect, rows[0]) if raw is not None else None
        if raw is None or compiled is None or compiled.sql is None or any(r.keys() != rows[0].keys() for r in rows):
            await conn.execute(self.statement, [dict(row) for row in rows])
            return
        try:
            raw.executemany(compiled.sql, [compiled.parameters(row) for row in rows])
        except sqlite3.Error as exc:
            raise DBAPIError.instance(compiled.sql, [dict(r) for r in rows], exc, sqlite3.Error) from exc

    def _for(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        return _compiled_for(self._compiled, self.statement, dialect, values)


def _compiled_for(
    cache: dict[tuple[str, tuple[str, ...]], _Compiled],
    statement: UpdateBase | AnySelect,
    dialect: Dialect,
    values: Mapping[str, Any],
) -> _Compiled:
    """The statement compiled for this dialect and these parameter names, once."""
    keys = tuple(sorted(values))
    if (compiled := cache.get((dialect.name, keys))) is None:
        compiled = cache[dialect.name, keys] = _Compiled(statement, dialect, list(keys))
    return compiled


def _lean(conn: AsyncConnection) -> LeanConnection | None:
    """The worker's own SQLite driver connection behind ``conn``; None on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return None
    sync = conn.sync_connection
    assert sync is not None  # started: handed out by engine.connect() or begin()
    driver = sync.connection.driver_connection
    return driver if isinstance(driver, LeanConnection) else None


def _inline_sqlite(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection when ``conn`` is the writer's, inside its transaction (statements run on the loop)."""
    driver = _lean(conn)
    if driver is not None and driver.in_transaction and not driver.inline_only:
        return driver.sqlite_connection
    return None


class PreparedRead:
    """A point lookup (``point_lookup``-marked SELECT) returning its rows; on SQLite run by sqlite3 directly."""

    def __init__(self, statement: AnySelect) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}
        self._rows: dict[str, tuple[Callable[..., tuple[Any, ...]], list[Processor]]] = {}

    async def all(self, conn: AsyncConnection, values: Mapping[str, Any]) -> list[AnyRow]:
        raw = _sqlite_on_loop(conn)
        compiled = self._for(conn.dialect, values) if raw is not None else None
        if raw is None or compiled is None or compiled.sql is None:
            return list((await conn.execute(self.statement, dict(values))).all())
        make, processors = self._row_type(conn.dialect)
        try:
            fetched = raw.execute(compiled.sql, compiled.parameters(values)).fetchall()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(compiled.sql, dict(values), exc, sqlite3.Error) from exc
        rows = [make(*(v if p is None else p(v) for v, p in zip(row, processors, strict=True))) for row in fetched]
        # Named tuples, not Rows: they answer to the same attribute names, which is all callers read.
        return cast("list[AnyRow]", rows)

    async def first(self, conn: AsyncConnection, values: Mapping[str, Any]) -> AnyRow | None:
        rows = await self.all(conn, values)
        return rows[0] if rows else None

    def _for(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        return _compiled_for(self._compiled, self.statement, dialect, values)

    def _row_type(self, dialect: Dialect) -> tuple[Callable[..., tuple[Any, ...]], list[Processor]]:
        if (known := self._rows.get(dialect.name)) is None:
            columns = list(self.statement.selected_columns)
            # mypy types only named tuples whose field names are literals; these come from the statement.
            make = namedtuple("LookupRow", [column.key for column in columns])  # type: ignore[misc]
            processors: list[Processor] = [
                column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
            ]
            known = self._rows[dialect.name] = (make, processors)
        return known


def _sqlite_on_loop(conn: AsyncConnection) -> sqlite3.Connection | None:
    """Any of the worker's SQLite connections: a point lookup runs on the event loop on each of them."""
    driver = _lean(conn)
    return driver.sqlite_connection if driver is not None else None
