"""The one-hop SQLite connection: same answers as the threaded path, and never a stalled event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import select, text

from service.store.engine.db import create_engine
from service.store.engine.sqlite_driver import point_lookup
from tests.support.databases import sqlite_url


async def test_reads_see_the_same_rows_inline_and_through_the_thread(tmp_path: Path) -> None:
    """A point lookup (run on the loop) and a plain query (run on the connection's thread) return the same rows."""
    engine = create_engine(sqlite_url(tmp_path))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id TEXT PRIMARY KEY, size INTEGER)"))
            await conn.execute(text("INSERT INTO items VALUES ('a', 1), ('b', 2), ('c', 3)"))
        query = select(text("id"), text("size")).select_from(text("items")).where(text("id = :key"))
        lookup = point_lookup(query)
        async with engine.connect() as conn:
            for key in ("a", "c", "missing"):
                threaded = [tuple(row) for row in await conn.execute(query, {"key": key})]
                inline = [tuple(row) for row in await conn.execute(lookup, {"key": key})]
                assert inline == threaded
            assert tuple((await conn.execute(lookup, {"key": "b"})).one()) == ("b", 2)
    finally:
        await engine.dispose()


async def test_a_group_waits_for_a_foreign_write_lock_without_stalling_the_loop(tmp_path: Path) -> None:
    """While another process holds the write lock, a write group waits for it off the event loop (other
    commands keep being served) and commits once the lock is released."""
    engine = create_engine(sqlite_url(tmp_path))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id TEXT PRIMARY KEY)"))
        foreign = sqlite3.connect(tmp_path / "storage.db", isolation_level=None)
        foreign.execute("BEGIN IMMEDIATE")  # someone else's write transaction

        async def write_group() -> None:
            async with engine.connect() as conn, conn.begin(), conn.begin_nested():
                await conn.execute(text("INSERT INTO items VALUES ('mine')"))

        group = asyncio.ensure_future(write_group())
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(0.2)
        assert loop.time() - started < 1.0, "the event loop kept running while the group waited"
        assert not group.done(), "the group waits for the lock"
        foreign.execute("ROLLBACK")
        foreign.close()
        await group
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT id FROM items"))).scalars().all() == ["mine"]
    finally:
        await engine.dispose()
