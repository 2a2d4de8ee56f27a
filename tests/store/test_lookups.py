"""Point lookups on SQLite share one held connection: always fresh, never a slow query, never a stale snapshot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from contracts import utc_now
from service.store import inbox
from service.store.engine.db import create_engine
from service.store.engine.lookups import PointLookups
from service.store.engine.writer import SingleWriter
from service.store.inbox import StoredReply
from service.store.models import InboxRecord
from tests.support.databases import sqlite_url


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
