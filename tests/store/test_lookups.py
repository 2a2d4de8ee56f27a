"""Point lookups on held connections (one on SQLite, a few on PostgreSQL): always fresh, never a slow query,
never a stale snapshot, never stuck on a connection the server dropped."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, text

from contracts import DeadlineExceeded, Unavailable, utc_now
from service.store import inbox
from service.store.engine.db import create_engine
from service.store.engine.lookups import PointLookups
from service.store.engine.schema import migrate
from service.store.engine.writer import SingleWriter
from service.store.inbox import StoredReply
from service.store.models import InboxRecord
from tests.support.databases import sqlite_url
from tests.support.private_postgres import PrivatePostgres
from tests.support.requirements import require_postgres_server


async def test_lookups_see_every_commit_and_refuse_statements_that_would_leave_the_loop(
    template_db: Path, tmp_path: Path
) -> None:
    shutil.copyfile(template_db, tmp_path / "storage.db")
    engine = create_engine(sqlite_url(tmp_path))
    writer, lookups = SingleWriter(engine), PointLookups(engine)
    await writer.start()
    await lookups.start()
    try:
        for n in range(3):  # each lookup after a commit sees it: the held connection keeps no old snapshot
            reply = StoredReply(f"reply-{n}", "ai.team.result", "{}", utc_now())
            record = {
                "requester": "agent",
                "envelope_id": f"env-{n}",
                "action": "ping",
                "idempotency_key": None,
                "req_hash": "h",
            }
            assert await writer.submit(lambda conn, r=reply, k=record: inbox.record(conn, reply=r, **k))
            async with lookups.connection() as conn:
                found = await inbox.find(conn, "agent", f"env-{n}", "ping", None)
            assert found is not None and found.reply_id == f"reply-{n}"
        async with lookups.connection() as conn:
            with pytest.raises(RuntimeError, match="only point lookups"):
                await conn.execute(select(InboxRecord.__table__.c.id))  # a scan: it would need the thread
    finally:
        await lookups.close()
        await writer.stop()
        await engine.dispose()


async def test_postgres_lookups_see_every_commit_and_outlive_a_server_restart(tmp_path: Path) -> None:
    """On PostgreSQL the held lookup connections read each commit at once (no transaction keeps a snapshot),
    and after the server restarts a lookup answers again, on a fresh connection, instead of failing forever."""
    require_postgres_server()
    async with PrivatePostgres() as pg:
        engine = create_engine(pg.url)
        try:
            await migrate(engine)
            writer, lookups = SingleWriter(engine), PointLookups(engine)
            await writer.start()
            await lookups.start()
            try:
                await _record_and_find(writer, lookups, "env-0")
                async with lookups.connection() as conn:
                    with pytest.raises(RuntimeError, match="only prepared point lookups"):  # shared: nothing else
                        await conn.execute(text("SELECT 1"))
                await _record_and_find(writer, lookups, "env-1")
                await pg.stop("immediate")
                with pytest.raises(Unavailable):
                    async with lookups.connection() as conn:
                        await inbox.find(conn, "agent", "env-0", "ping", None)
                await pg.start()
                for n in range(2, 8):  # more lookups than held connections: every one of them was replaced
                    await _record_and_find(writer, lookups, f"env-{n}")
            finally:
                await lookups.close()
                await writer.stop()
        finally:
            await engine.dispose()


async def _record_and_find(writer: SingleWriter, lookups: PointLookups, envelope_id: str) -> None:
    reply = StoredReply(f"reply-{envelope_id}", "ai.team.result", "{}", utc_now())
    record = {"requester": "agent", "envelope_id": envelope_id, "action": "ping", "idempotency_key": None}
    assert await writer.submit(lambda conn: inbox.record(conn, reply=reply, req_hash="h", **record))
    found = await asyncio.gather(*(_find(lookups, envelope_id) for _ in range(6)))
    assert {f.reply_id if f else None for f in found} == {reply.reply_id}


async def test_concurrent_postgres_lookups_each_get_their_own_rows(pg_url: str) -> None:
    """Lookups of many commands at once run together on PostgreSQL: each still gets exactly its own row, a key
    with no row gets none, and a lookup with another statement shape (an idempotency key) answers as well."""
    engine = create_engine(pg_url)
    await migrate(engine)
    writer, lookups = SingleWriter(engine), PointLookups(engine)
    await writer.start()
    await lookups.start()
    try:
        for n in range(300):
            reply = StoredReply(f"reply-{n}", "ai.team.result", "{}", utc_now())
            record = {"requester": f"agent-{n % 7}", "envelope_id": f"env-{n}", "action": "ping", "req_hash": "h"}
            assert await writer.submit(lambda c, r=reply, k=record: inbox.record(c, reply=r, idempotency_key=None, **k))

        async def find(n: int, requester: str, key: str | None = None) -> str | None:
            async with lookups.connection() as conn:
                found = await inbox.find(conn, requester, f"env-{n}", "ping", key)
            return found.reply_id if found else None

        asked = [find(n, f"agent-{n % 7}") for n in range(300)]  # each its own row
        asked += [find(n, f"agent-{(n + 1) % 7}") for n in range(50)]  # another requester's envelope: nothing
        asked += [find(n, f"agent-{n % 7}", key="k") for n in range(20)]  # by id or key: the other statement
        answers = await asyncio.gather(*asked)
        assert answers[:300] == [f"reply-{n}" for n in range(300)]
        assert answers[300:350] == [None] * 50
        assert answers[350:] == [f"reply-{n}" for n in range(20)]
    finally:
        await lookups.close()
        await writer.stop()
        await engine.dispose()


async def _find(lookups: PointLookups, envelope_id: str) -> StoredReply | None:
    async with lookups.connection() as conn:
        return await inbox.find(conn, "agent", envelope_id, "ping", None)


async def test_postgres_reads_run_under_the_read_limit_and_plan_each_listing(pg_url: str) -> None:
    """Held read connections carry the read limit and custom plans (a generic plan for a prepared listing can
    read far more than a rare filter value needs), and a read past the limit answers DEADLINE_EXCEEDED."""
    engine = create_engine(pg_url, read_timeout_ms=200)
    lookups = PointLookups(engine)
    await lookups.start()
    try:
        async with lookups.reads() as conn:
            settings = {
                name: (await conn.exec_driver_sql(f"SHOW {name}")).scalar_one()
                for name in ("statement_timeout", "plan_cache_mode")
            }
        assert settings == {"statement_timeout": "200ms", "plan_cache_mode": "force_custom_plan"}
        with pytest.raises(DeadlineExceeded):
            async with lookups.reads() as conn:
                await conn.exec_driver_sql("SELECT pg_sleep(2)")
        async with lookups.reads() as conn:  # the connection that ran too long is still good
            assert (await conn.exec_driver_sql("SELECT 1")).scalar_one() == 1
    finally:
        await lookups.close()
        await engine.dispose()
