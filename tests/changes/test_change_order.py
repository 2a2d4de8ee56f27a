"""Change ids follow commits on PostgreSQL too, whatever the number of workers (``store.changes``).

Two transactions record a change each: the second waits until the first commits, so it can never commit a
higher id while a lower one is still invisible, and a reader that saw change n has seen every change before
it. Without that, ``changes_since`` could move its cursor past a change that commits a moment later.
"""

from __future__ import annotations

import asyncio

from contracts import ChangeKind, utc_now
from service.store import changes as store
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate


async def test_a_later_transaction_records_its_change_after_an_earlier_commits(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        await migrate(engine)
        change = store.new_change(
            ChangeKind.MEMORY_PUT, node="n1", at=utc_now(), visibility="public", owner=None, namespace=["x"], key="k"
        )
        async with engine.connect() as first, engine.connect() as second, engine.connect() as reader:
            await first.begin()
            await store.insert_changes(first, [change])
            await second.begin()
            later = asyncio.create_task(store.insert_changes(second, [{**change, "node": "n2"}]))
            await asyncio.sleep(0.5)
            assert not later.done(), "the second transaction recorded a change while the first was open"
            assert (await store.horizon(reader)).last == 0
            await reader.rollback()
            await first.commit()
            await asyncio.wait_for(later, 10)
            assert (await store.horizon(reader)).last == 1, "the first change is visible, the second not yet"
            await reader.rollback()
            await second.commit()
            rows = await store.waiting(reader, "n2", 10) + await store.waiting(reader, "n1", 10)
        assert [(row.id, row.node) for row in rows] == [(2, "n2"), (1, "n1")]
    finally:
        await engine.dispose()
