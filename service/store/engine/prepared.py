"""The hottest statements, compiled once by SQLAlchemy and run by the driver itself where that is safe.

SQLAlchemy's execution layer (an execution context, events, a result object, a greenlet switch) costs
about 60 µs per statement here, several times what the database needs for the INSERT itself, and every
write command runs two to four such statements. A ``PreparedWrite`` keeps SQLAlchemy for what it is for:
it compiles the statement for the dialect once per set of parameter names and converts every value with
the column type's own bind processor (JSON, timestamps, UUIDs come out exactly as SQLAlchemy stores
them). The compiled SQL then goes straight to the driver; driver errors are wrapped as SQLAlchemy's own,
so error handling is unchanged. SQLAlchemy's cursor events do not see the direct statements.

- SQLite: on the writer's connection, inside its transaction, where statements already run on the event
  loop (see ``sqlite_driver``), sqlite3 runs it.
- PostgreSQL: asyncpg runs it as a prepared statement, kept in the connection's statement cache across
  groups (one round trip, no parse or plan after the first), once the connection is inside a transaction
  SQLAlchemy began: a write never runs outside the group's transaction.
- Anywhere else (a SQLite connection outside the writer, a write outside a transaction, a statement whose
  compilation needs Python-side defaults) it executes through SQLAlchemy as usual.

``PreparedRead`` does the same for point lookups (statements marked with ``sqlite_driver.point_lookup``):
on any SQLite connection sqlite3 runs them on the event loop, on any asyncpg connection asyncpg runs them
(in the transaction if one is open, else on their own, with no BEGIN and ROLLBACK around them). The row's
values go through each column type's result processor, and the rows it returns answer to the same
attribute names as SQLAlchemy's.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import asyncpg
from sqlalchemy import ColumnElement, and_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from service.store.engine.db import AsyncpgConnection
from service.store.engine.sqlite_driver import LeanConnection, point_lookup
from service.store.types import AnyRow, AnySelect

Processor = Callable[[Any], Any] | None
DIRECT_PARAMSTYLES = frozenset({"qmark", "numeric_dollar"})
"""Positional parameters, in the order ``positiontup`` lists them: sqlite3's ``?`` and asyncpg's ``$n``."""
_DRIVER_ERRORS = (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError)


class _Compiled:
    __slots__ = ("_compiled", "_processors", "sql")

    def __init__(self, statement: UpdateBase | AnySelect, dialect: Dialect, keys: list[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        assert isinstance(compiled, SQLCompiler)  # a statement (not DDL) compiles with the dialect's SQL compiler
        self.sql: str | None = None
        if compiled.insert_prefetch or compiled.update_prefetch or dialect.paramstyle not in DIRECT_PARAMSTYLES:
            return  # Python-side defaults to compute, or parameters by name: SQLAlchemy's path
        self.sql = compiled.string
        self._compiled = compiled
        positions = compiled.positiontup
        assert positions is not None  # positional parameters: the compiler lists them in order
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


class _Direct(Protocol):
    """A driver connection that runs compiled SQL with positional parameters."""

    async def execute(self, sql: str, parameters: tuple[Any, ...]) -> int: ...

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    async def fetch(self, sql: str, parameters: tuple[Any, ...]) -> Sequence[Sequence[Any]]: ...


class _SQLite:
    """sqlite3 on the event loop: only where ``sqlite_driver`` already runs statements there."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: tuple[Any, ...]) -> int:
        return self._conn.execute(sql, parameters).rowcount

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, parameters: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        return self._conn.execute(sql, parameters).fetchall()


class _Asyncpg:
    """asyncpg's prepared statements (its per-connection cache): one round trip per statement."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncpgConnection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: tuple[Any, ...]) -> int:
        status = await self._conn.execute(sql, *parameters)  # "INSERT 0 1", "UPDATE 3": the count comes last
        return int(status.rsplit(" ", 1)[-1])

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._conn.executemany(sql, rows)  # the rows pipelined in one round trip

    async def fetch(self, sql: str, parameters: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        return await self._conn.fetch(sql, *parameters)


def _wrapped(exc: Exception, sql: str, values: dict[str, Any] | list[dict[str, Any]]) -> Exception:
    """A driver error (one of ``_DRIVER_ERRORS``) as SQLAlchemy raises it, a ``DBAPIError`` whose ``orig`` is
    the driver's: the writer and the read paths look at its SQLSTATE and class, whichever path ran it."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):  # as SQLAlchemy's asyncpg adapter names it
        return IntegrityError(sql, values, exc)
    return DBAPIError.instance(sql, values, exc, Exception)


class PreparedWrite:
    """An INSERT or UPDATE executed with a row (or rows) of parameters; ``execute`` returns the rowcount."""

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    async def execute(self, conn: AsyncConnection, values: Mapping[str, Any]) -> int:
        direct = _writing(conn)
        compiled = self._for(conn.dialect, values) if direct is not None else None
        if direct is None or compiled is None or compiled.sql is None:
            return int((await conn.execute(self.statement, dict(values))).rowcount)
        try:
            return await direct.execute(compiled.sql, compiled.parameters(values))
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc, compiled.sql, dict(values)) from exc

    async def fetch(self, conn: AsyncConnection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A write with RETURNING: its rows, as the driver gives the values (no result processing)."""
        direct = _writing(conn)
        compiled = self._for(conn.dialect, values) if direct is not None else None
        if direct is None or compiled is None or compiled.sql is None:
            return [tuple(row) for row in (await conn.execute(self.statement, dict(values))).all()]
        try:
            return [tuple(row) for row in await direct.fetch(compiled.sql, compiled.parameters(values))]
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc, compiled.sql, dict(values)) from exc

    async def execute_many(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        if len(rows) <= 1:  # one row: asyncpg's executemany costs more than an execute
            if rows:
                await self.execute(conn, rows[0])
            return
        direct = _writing(conn)
        compiled = self._for(conn.dialect, rows[0]) if direct is not None else None
        if direct is None or compiled is None or compiled.sql is None or any(r.keys() != rows[0].keys() for r in rows):
            await conn.execute(self.statement, [dict(row) for row in rows])
            return
        try:
            await direct.execute_many(compiled.sql, [compiled.parameters(row) for row in rows])
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc, compiled.sql, [dict(r) for r in rows]) from exc

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


def _driver(conn: AsyncConnection) -> object:
    sync = conn.sync_connection
    assert sync is not None  # started: handed out by engine.connect() or begin()
    return sync.connection.driver_connection


def _lean(conn: AsyncConnection) -> LeanConnection | None:
    """The worker's own SQLite driver connection behind ``conn``; None on other databases."""
    if conn.dialect.name != "sqlite":
        return None
    driver = _driver(conn)
    return driver if isinstance(driver, LeanConnection) else None


def _asyncpg(conn: AsyncConnection) -> AsyncpgConnection | None:
    if conn.dialect.driver != "asyncpg":
        return None
    return cast(AsyncpgConnection, _driver(conn))


def _writing(conn: AsyncConnection) -> _Direct | None:
    """How to run a write on ``conn`` directly: inside the writer's SQLite transaction (statements on the
    loop), or inside a PostgreSQL transaction SQLAlchemy began; None where SQLAlchemy must run it."""
    if (lean := _lean(conn)) is not None:
        return _SQLite(lean.sqlite_connection) if lean.in_transaction and not lean.inline_only else None
    if (pg := _asyncpg(conn)) is not None and pg.is_in_transaction():
        return _Asyncpg(pg)
    return None


def _reading(conn: AsyncConnection) -> _Direct | None:
    """How to run a point lookup on ``conn`` directly: any of the worker's SQLite connections (on the loop),
    any asyncpg connection (a transaction is not needed for one indexed SELECT)."""
    if (lean := _lean(conn)) is not None:
        return _SQLite(lean.sqlite_connection)
    if (pg := _asyncpg(conn)) is not None:
        return _Asyncpg(pg)
    return None


ROUTE = "storage_lookup_route"
"""``conn.info`` key of a connection whose point lookups go elsewhere (``lookups``: run together on PostgreSQL)."""
LookupRoute = Callable[["PreparedRead", Mapping[str, Any]], Awaitable[list[AnyRow]]]
Key = tuple[Any, ...]


class PreparedRead:
    """A point lookup (``point_lookup``-marked SELECT) returning its rows, run by the driver directly.

    Built with ``by_keys``, it also has a form for many keys at once (PostgreSQL: the keys as arrays, joined
    through ``unnest``), with which concurrent lookups of different commands share one round trip.
    """

    def __init__(self, statement: AnySelect, *, keys: Mapping[str, ColumnElement[Any]] | None = None) -> None:
        self.statement = statement
        self.keys: tuple[str, ...] = tuple(keys or ())
        """The parameters naming one lookup's key (empty: no form for many keys)."""
        self._many = _many_keys_form(statement, keys) if keys else None
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}
        self._compiled_many: dict[tuple[str, tuple[str, ...]], _Compiled] = {}
        self._rows: dict[str, tuple[Callable[..., tuple[Any, ...]], list[Processor]]] = {}

    @classmethod
    def by_keys(cls, columns: Sequence[ColumnElement[Any]], keys: Mapping[str, ColumnElement[Any]]) -> PreparedRead:
        """``SELECT columns WHERE key column = :param AND ...``: a lookup that can run for many keys at once."""
        where = [column == bindparam(name) for name, column in keys.items()]
        return cls(point_lookup(select(*columns).where(*where)), keys=keys)

    async def all(self, conn: AsyncConnection, values: Mapping[str, Any]) -> list[AnyRow]:
        if (route := conn.info.get(ROUTE)) is not None:
            return cast("list[AnyRow]", await route(self, values))
        direct = self._direct(conn)
        compiled = self._for(conn.dialect, values) if direct is not None else None
        if direct is None or compiled is None or compiled.sql is None:
            return list((await conn.execute(self.statement, dict(values))).all())
        make, processors = self._row_type(conn.dialect)
        try:
            fetched = await direct.fetch(compiled.sql, compiled.parameters(values))
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc, compiled.sql, dict(values)) from exc
        rows = [make(*(v if p is None else p(v) for v, p in zip(row, processors, strict=True))) for row in fetched]
        # Named tuples, not Rows: they answer to the same attribute names, which is all callers read.
        return cast("list[AnyRow]", rows)

    async def for_keys(self, conn: AsyncConnection, keys: Sequence[Key]) -> dict[Key, list[AnyRow]]:
        """The rows of each key (``self.keys`` order) in one statement; on PostgreSQL only."""
        pg = _asyncpg(conn)
        assert self._many is not None and pg is not None, "only a by_keys lookup runs for many keys, on PostgreSQL"
        arrays = {name: [key[i] for key in keys] for i, name in enumerate(self.keys)}
        compiled = _compiled_for(self._compiled_many, self._many, conn.dialect, arrays)
        assert compiled.sql is not None  # asyncpg's positional parameters
        make, processors = self._row_type(conn.dialect)
        try:
            fetched = await _Asyncpg(pg).fetch(compiled.sql, compiled.parameters(arrays))
        except _DRIVER_ERRORS as exc:
            raise _wrapped(exc, compiled.sql, arrays) from exc
        width = len(processors)
        found: dict[Key, list[AnyRow]] = {}
        for row in fetched:
            values = (v if p is None else p(v) for v, p in zip(row[:width], processors, strict=True))
            found.setdefault(tuple(row[width:]), []).append(cast("AnyRow", make(*values)))
        return found

    def _direct(self, conn: AsyncConnection) -> _Direct | None:
        return _reading(conn)

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


class PreparedQuery(PreparedRead):
    """A read that may scan (a listing): asyncpg runs it directly on PostgreSQL (no SQLAlchemy layer, no BEGIN
    and ROLLBACK); on SQLite it goes through SQLAlchemy, to the connection's thread, never on the event loop."""

    def _direct(self, conn: AsyncConnection) -> _Direct | None:
        pg = _asyncpg(conn)
        return None if pg is None else _Asyncpg(pg)


def _many_keys_form(statement: AnySelect, keys: Mapping[str, ColumnElement[Any]]) -> AnySelect:
    """The lookup for many keys: its columns, then the key the row answers, joined to ``unnest`` of the
    keys' arrays (one parameter per key column, whatever the number of keys: one statement to prepare)."""
    arrays = [bindparam(name, type_=ARRAY(column.type)) for name, column in keys.items()]
    names = [f"k{i}" for i in range(len(keys))]
    wanted = func.unnest(*arrays).table_valued(*names).render_derived()
    (table,) = statement.get_final_froms()
    joined = table.join(wanted, and_(*(column == wanted.c[n] for n, column in zip(names, keys.values(), strict=True))))
    return select(*statement.selected_columns, *(wanted.c[n] for n in names)).select_from(joined)
