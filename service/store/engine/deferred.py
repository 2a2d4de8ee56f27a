"""Rows a PostgreSQL group writes at its end, one statement per table for all its commands.

Every write command inserts its inbox row, and a registration its labels: on PostgreSQL each such INSERT
is a round trip, more than the work it does. When the writer runs a group all or nothing, it gathers these
rows and sends each table's as one ``INSERT ... SELECT FROM unnest(<one array per column>)`` before the
commit (one statement text whatever the number of rows, so asyncpg prepares it once). Only rows nothing
in the group reads back are deferred: the inbox is read by commands outside the group, labels by listings.

A deferred insert counts on going in: the flush checks the rows inserted, and when fewer went in (a twin
command's inbox row, say) it raises ``RowsRefused``; the writer then rolls the group back and runs it
again job by job, where every insert runs at once and the job learns its real outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Column, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.engine.conflicts import prepared_insert_or_skip
from service.store.engine.prepared import PreparedWrite

GROUP_ROWS = "storage_group_rows"
"""``conn.info`` key of the rows the writer's current group defers (set only while it runs all or nothing)."""


class RowsRefused(Exception):
    """Fewer deferred rows went in than were promised: the group runs again, job by job."""


class DeferredInsert:
    """An insert of ``table``'s rows, deferred to the end of the group when the writer allows it.

    ``skip_conflicts``: ``ON CONFLICT DO NOTHING`` (the inbox: a twin's row may be there); run at once, it
    answers how many rows went in, as ``PreparedWrite`` does.
    """

    def __init__(self, table: Table, columns: Sequence[Column[Any]], *, skip_conflicts: bool = False) -> None:
        self.names = tuple(column.key for column in columns)
        self._table = table
        self._skip_conflicts = skip_conflicts
        self._plain = PreparedWrite(table.insert())
        arrays = [bindparam(column.key, type_=ARRAY(column.type)) for column in columns]
        unnested = func.unnest(*arrays).table_valued(*self.names).render_derived()
        together = pg_insert(table).from_select(list(self.names), select(*unnested.c))
        self._together = PreparedWrite(together.on_conflict_do_nothing() if skip_conflicts else together)

    async def insert(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert ``rows`` now, or defer them to the group's end; the number inserted (or promised)."""
        if not rows:
            return 0
        group: GroupRows | None = conn.info.get(GROUP_ROWS)
        if group is not None:
            group.add(self, rows)
            return len(rows)
        now = prepared_insert_or_skip(conn.dialect.name, self._table) if self._skip_conflicts else self._plain
        if len(rows) == 1:
            return await now.execute(conn, rows[0])
        await now.execute_many(conn, rows)
        return len(rows)

    async def insert_together(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> int:
        """All ``rows`` in one statement (PostgreSQL); the number that went in."""
        arrays = {name: [row[name] for row in rows] for name in self.names}
        return await self._together.execute(conn, arrays)


class GroupWrite(Protocol):
    """What a group's end runs: all the rows one kind of deferred write gathered, in one statement."""

    async def insert_together(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> int: ...


class GroupRows:
    """The deferred rows of one group, by insert, in the order they were added."""

    def __init__(self) -> None:
        self._rows: dict[GroupWrite, list[Mapping[str, Any]]] = {}

    def add(self, insert: GroupWrite, rows: Sequence[Mapping[str, Any]]) -> None:
        self._rows.setdefault(insert, []).extend(rows)

    async def flush(self, conn: AsyncConnection) -> None:
        """Insert every table's rows in one statement each; ``RowsRefused`` when some did not go in."""
        for insert, rows in self._rows.items():
            inserted = await insert.insert_together(conn, rows)
            if inserted != len(rows):
                raise RowsRefused(f"{len(rows) - inserted} of {len(rows)} deferred rows did not go in")
        self._rows.clear()
