"""Prepared statements run by the driver directly (sqlite3, asyncpg) store and read exactly what SQLAlchemy's own
execution does, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.store.engine.prepared import PreparedRead, PreparedWrite
from service.store.engine.writer import SingleWriter
from service.store.models import Thread, ThreadMessageRow
from tests.support.databases import BACKENDS
from tests.support.migrated import migrated_engine

threads, messages = Thread.__table__, ThreadMessageRow.__table__
RAW = "SELECT thread_id, seq, role, content, metadata, created_at, deleted_at FROM messages ORDER BY seq"
WHEN = datetime(2026, 11, 22, 4, 5, 6, 789012, tzinfo=UTC)


def message(thread_id: str, seq: int, content: object) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "thread_id": thread_id,
        "seq": seq,
        "role": "user",
        "content": content,
        "metadata": {"lang": "ru", "note": "Привет", "n": 1.5},
        "created_at": WHEN,
        "deleted_at": None,
    }


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, template_db: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request.param, template_db, tmp_path) as created:
        yield created


async def test_direct_and_sqlalchemy_executions_store_the_same_values(engine: AsyncEngine) -> None:
    writer = SingleWriter(engine)
    await writer.start()
    through_sqlalchemy: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda *args: through_sqlalchemy.append(args[2].split("(")[0])
    )
    prepared = PreparedWrite(insert(messages))
    thread = {
        "metadata": {},
        "version": 1,
        "message_count": 0,
        "next_seq": 0,
        "created_at": WHEN,
        "updated_at": WHEN,
        "visibility": "private",
    }
    contents: list[object] = ["text", {"parts": [1, None, "ü"]}, None, [1, 2]]
    direct = [message("direct", i, c) for i, c in enumerate(contents)]
    usual = [dict(row, id=uuid.uuid4(), thread_id="usual") for row in direct]
    try:

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(insert(threads), [dict(thread, id="direct"), dict(thread, id="usual")])
            await prepared.execute_many(conn, direct)  # inside the writer's transaction: the driver directly
            await conn.execute(insert(messages), usual)  # SQLAlchemy's own execution

        await writer.submit(write)

        async def duplicate(conn: AsyncConnection) -> int:
            return await prepared.execute(conn, direct[0])

        with pytest.raises(IntegrityError):  # a driver error comes out as SQLAlchemy's, as the writer expects
            await writer.submit(duplicate)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(messages).order_by(messages.c.seq))).mappings().all()
            stored = (await conn.exec_driver_sql(RAW)).all()
    finally:
        await writer.stop()
    by_thread = {"direct": [], "usual": []}  # type: dict[str, list[dict[str, object]]]
    for row in rows:
        by_thread[str(row["thread_id"])].append({k: v for k, v in row.items() if k not in ("id", "thread_id")})
    assert through_sqlalchemy.count("INSERT INTO messages ") == 1, "the prepared insert went through SQLAlchemy"
    assert by_thread["direct"] == by_thread["usual"] and len(by_thread["direct"]) == len(contents)
    as_text = {thread: [row[1:] for row in stored if row[0] == thread] for thread in ("direct", "usual")}
    assert as_text["direct"] == as_text["usual"], "the stored text differs (JSON or timestamp format)"
    assert by_thread["direct"][0]["created_at"] == WHEN and by_thread["direct"][2]["content"] is None


async def test_a_prepared_lookup_reads_what_sqlalchemy_reads(engine: AsyncEngine) -> None:
    """Typed values (timestamps, JSON) come back the same, under the same attribute names."""
    lookup = select(threads).where(threads.c.id == bindparam("thread_key"))
    row = {
        "id": "t",
        "metadata": {"ключ": [1, None]},
        "version": 3,
        "message_count": 2,
        "next_seq": 2,
        "owner": "agent-a",
        "visibility": "private",
    }
    async with engine.begin() as conn:
        await conn.execute(insert(threads), dict(row, created_at=WHEN, updated_at=WHEN, expires_at=None))
    async with engine.connect() as conn:
        direct = await PreparedRead(lookup).all(conn, {"thread_key": "t"})
        usual = (await conn.execute(lookup, {"thread_key": "t"})).all()
        missing = await PreparedRead(lookup).first(conn, {"thread_key": "none"})
    assert [tuple(r) for r in direct] == [tuple(r) for r in usual] and len(direct) == 1
    assert direct[0].metadata == {"ключ": [1, None]} and direct[0].created_at == WHEN and missing is None
