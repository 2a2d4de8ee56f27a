"""Inserts that tolerate a concurrent twin: the constraint decides, not the process being alone.

``INSERT ... ON CONFLICT DO NOTHING`` (any unique constraint), in the connection's dialect. On PostgreSQL
an insert that collides with another transaction's uncommitted row waits for that transaction: after its
commit the insert does nothing (rowcount 0), after its rollback it goes ahead. That wait is what lets
several workers race on the same command or the same artifact without a unique-violation error. SQLite
has the same clause; there the single worker is alone, so it only ever meets committed rows.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Insert, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.engine.prepared import PreparedWrite


def insert_or_skip(conn: AsyncConnection, table: Table) -> Insert:
    """The statement, built once per dialect and table: execute it with the row as parameters.

    A statement object computes its cache key once; building a new one (or calling ``.values()``) per row
    redoes that work on every command.
    """
    return insert_or_skip_for(conn.dialect.name, table)


@cache
def insert_or_skip_for(dialect: str, table: Table) -> Insert:
    dialect_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return dialect_insert(table).on_conflict_do_nothing()


@cache
def prepared_insert_or_skip(dialect: str, table: Table) -> PreparedWrite:
    """The same statement for the writer's hot path: ``execute`` returns 1 when the row went in, 0 when skipped."""
    return PreparedWrite(insert_or_skip_for(dialect, table))
