"""A thread's history beyond its live tail: trimming to ``max_messages``, restoring trimmed messages, the system prompt.

A trimmed message is soft-deleted like any other (``deleted_at``: every reader skips it, the purge of
soft-deleted rows removes it after ``STORAGE_PURGE_AFTER``) and also marked ``trimmed_at``, so
``restore_thread`` can tell it from a message a ``clear`` hid and bring back only what trimming took.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, String, TextClause, and_, case, func, literal_column, null, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.models import ThreadMessageRow
from service.store.threads import json_bytes
from service.store.types import AnyRow

messages = ThreadMessageRow.__table__

_SYSTEM: ColumnElement[str] = literal_column("'system'", String())
"""A literal, not a bound value: the partial index ``ix_messages_system`` (``role = 'system'``) only serves a
query whose condition the planner can match to its own, on SQLite and under a prepared plan alike."""


async def trim(conn: AsyncConnection, thread_id: str, keep: int, now: datetime) -> int:
    """Soft-delete (and mark trimmed) the active non-system messages older than the newest ``keep``; how many.

    One statement: the ids past the newest ``keep`` come from a backwards walk of (thread_id, deleted_at, seq).
    """
    active = and_(messages.c.thread_id == thread_id, messages.c.deleted_at.is_(None), messages.c.role != "system")
    older = select(messages.c.id).where(active).order_by(messages.c.seq.desc()).offset(keep).scalar_subquery()
    result = await conn.execute(update(messages).where(messages.c.id.in_(older)).values(deleted_at=now, trimmed_at=now))
    return int(result.rowcount or 0)


async def forget_trimmed(conn: AsyncConnection, thread_id: str) -> None:
    """A ``clear`` or a fresh start ends the dialog: what was trimmed before it is no longer restorable."""
    await conn.execute(
        update(messages)
        .where(messages.c.thread_id == thread_id, messages.c.trimmed_at.is_not(None))
        .values(trimmed_at=None)
    )


async def restore_trimmed(conn: AsyncConnection, thread_id: str, cutoff: datetime) -> int:
    """Make the messages trimmed at or after ``cutoff`` live again, in their places; how many."""
    result = await conn.execute(
        update(messages)
        .where(
            messages.c.thread_id == thread_id,
            messages.c.trimmed_at.is_not(None),
            messages.c.deleted_at >= cutoff,
        )
        .values(deleted_at=None, trimmed_at=None)
    )
    return int(result.rowcount or 0)


async def count_trimmed_before(conn: AsyncConnection, thread_id: str, cutoff: datetime) -> int:
    """Trimmed messages past the purge window that cleanup has not removed yet."""
    query = (
        select(func.count())
        .select_from(messages)
        .where(messages.c.thread_id == thread_id, messages.c.trimmed_at.is_not(None), messages.c.deleted_at < cutoff)
    )
    return int((await conn.execute(query)).scalar_one())


async def system_prompt(conn: AsyncConnection, thread_id: str, budget: int) -> AnyRow | None:
    """The newest live system message: its ``id``, its ``content`` (None when over ``budget`` bytes, so a huge
    prompt never leaves the database) and its ``size_bytes``; None when the thread has no live system message."""
    size = json_bytes(messages.c.content, conn.dialect.name)
    live: ColumnElement[bool] | TextClause = messages.c.deleted_at.is_(None)
    if conn.dialect.name == "sqlite":  # unary plus: no index term, so SQLite takes the small partial index (20,000
        live = text("+messages.deleted_at IS NULL")  # messages: 0.02 ms, not a 13 ms walk of every live one)
    query = (
        select(
            messages.c.id,
            case((size <= budget, messages.c.content), else_=null()).label("content"),
            size.label("size_bytes"),
        )
        .where(messages.c.thread_id == thread_id, messages.c.role == _SYSTEM, live)
        .order_by(messages.c.seq.desc())
        .limit(1)
    )
    return (await conn.execute(query)).first()
