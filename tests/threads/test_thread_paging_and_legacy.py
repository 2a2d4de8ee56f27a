"""get_thread pages back through a thread with cursor → next_cursor; migration 0007 leaves old threads public
and ownerless."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text

from service.store.engine import schema
from tests.support.bus import Bus, error, output


async def test_get_thread_pages_back_to_the_first_message(bus: Bus) -> None:
    """limit=4 over 10 messages: pages of 4, 4, 2 going back, each chronological, next_cursor null at the start."""
    thread_id = f"pages-{uuid.uuid4().hex[:8]}"
    messages = [{"role": "user", "content": f"m{i}"} for i in range(10)]
    output(await bus.call("save_thread", {"thread_id": thread_id, "messages": messages}))

    pages: list[list[str]] = []
    params: dict[str, Any] = {"thread_id": thread_id, "limit": 4}
    while True:
        got = output(await bus.call("get_thread", params))
        pages.append([m["content"] for m in got["messages"]])
        if got["next_cursor"] is None:
            break
        params["cursor"] = got["next_cursor"]
    assert pages == [["m6", "m7", "m8", "m9"], ["m2", "m3", "m4", "m5"], ["m0", "m1"]]


async def test_a_cursor_not_issued_by_the_worker_is_invalid(bus: Bus) -> None:
    """A forged or damaged cursor is INVALID_ARGUMENT naming the field, not a crash."""
    thread_id = f"pages-{uuid.uuid4().hex[:8]}"
    output(await bus.call("save_thread", {"thread_id": thread_id, "messages": [{"role": "user", "content": "x"}]}))
    for forged in ("not-base64!", "eyJiZWZvcmUiOiAiMTAifQ", "eyJiZWZvcmUiOiAxZTMwMH0"):
        failure = error(await bus.call("get_thread", {"thread_id": thread_id, "cursor": forged}))
        assert failure["code"] == "INVALID_ARGUMENT" and failure["details"]["field"] == "cursor"


async def test_migration_0007_makes_old_threads_public_and_ownerless(engine: Any) -> None:
    """A thread saved before migration 0007 comes out of it with no owner, no trace and visibility public."""
    await schema.migrate(engine, "0006")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO threads (id, metadata, version, message_count, next_seq, created_at, updated_at) "
                "VALUES ('old-chat', '{}', 3, 0, 0, :now, :now)"
            ),
            {"now": datetime(2026, 1, 1)},
        )
    await schema.migrate(engine)
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT owner, visibility, trace_id FROM threads WHERE id = 'old-chat'"))).one()
    assert tuple(row) == (None, "public", None)
