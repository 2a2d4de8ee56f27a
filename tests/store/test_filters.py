"""Class 9: no input makes a read run unbounded.

Mallory sends listings with hundreds of metadata and label filters (one with 300 ran 107 s on PostgreSQL;
1,000 came back UNAVAILABLE, which clients retry forever). At most 32 filters a call are accepted; more are
INVALID_ARGUMENT at once. And every read statement runs under STORAGE_READ_TIMEOUT_MS: a read that runs
past it is stopped and answered DEADLINE_EXCEEDED, not retryable, and the worker goes on serving.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from contracts import DeadlineExceeded
from service.store.engine import db
from service.store.engine.db import create_engine, read_connection
from service.store.models import Thread
from tests.support.artifacts import manifest_for
from tests.support.bus import Bus, error, output
from tests.support.workers import Workers

pytestmark = pytest.mark.security

MALLORY = {"requester_id": "mallory", "requester_trace_id": "trace-mallory"}
ALICE = {"requester_id": "alice", "requester_trace_id": "trace-alice"}
LIMIT = 32


def _filters(count: int) -> dict[str, str]:
    return {f"k{index:04d}": "v" for index in range(count)}


async def test_more_than_32_filters_are_refused_at_once(bus: Bus, storage_root: Path) -> None:
    """33 or 1,000 filters on list_threads, list_artifacts and search_memory: INVALID_ARGUMENT, fast, not retryable."""
    thread_id = f"tagged-{uuid.uuid4().hex[:8]}"
    output(await bus.call("save_thread", {"thread_id": thread_id, "metadata": _filters(LIMIT)}, context=MALLORY))
    found = output(await bus.call("list_threads", {"metadata": _filters(LIMIT)}, context=MALLORY))
    assert [t["thread_id"] for t in found["threads"]] == [thread_id]  # 32 is fine

    calls = (
        ("list_threads", "metadata", {}),
        ("list_artifacts", "labels", {}),
        ("search_memory", "labels", {"namespace_prefix": ["mallory"]}),
    )
    for count in (LIMIT + 1, 1000):
        for action, field, extra in calls:
            started = time.monotonic()
            failure = error(await bus.call(action, {field: _filters(count), **extra}, context=MALLORY, timeout=30))
            assert failure["code"] == "INVALID_ARGUMENT" and failure["retryable"] is False, (action, count, failure)
            assert str(LIMIT) in failure["message"], failure
            assert time.monotonic() - started < 5, f"{action} with {count} filters took too long to refuse"
    registered = manifest_for(storage_root, b"still works", labels=_filters(3))
    output(await bus.call("register_artifact", {"manifest": registered}, context=MALLORY))


SEEDED = 300_000


async def _seed_private_threads(database_url: str) -> None:
    """Alice's 300,000 private threads, written straight to the database (faster than 300,000 commands).

    (Before threads had owners, the same rows are plain threads: the listing then has nothing to stop it.)"""
    owned = "owner" in Thread.__table__.c
    columns = "id, metadata, version, message_count, next_seq, created_at, updated_at"
    columns += ", owner, visibility, trace_id" if owned else ""
    acl = ", 'alice', 'private', 'trace-alice'" if owned else ""
    if database_url.startswith("postgresql"):
        rows = (
            f"SELECT 'seed-' || g, '{{}}'::jsonb, 1, 0, 0, now() - g * interval '1 millisecond', now(){acl} "
            f"FROM generate_series(1, {SEEDED}) AS g"
        )
        statement = f"INSERT INTO threads ({columns}) {rows}"
    else:
        statement = (
            f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {SEEDED}) "
            f"INSERT INTO threads ({columns}) SELECT 'seed-' || g, '{{}}', 1, 0, 0, "
            f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || g || ' seconds'), "
            f"strftime('%Y-%m-%d %H:%M:%f', 'now'){acl} FROM s"
        )
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE threads"))  # as autovacuum would after such an insert
    finally:
        await engine.dispose()


async def test_a_read_past_the_time_limit_is_stopped_not_retried(workers: Workers, database_url: str) -> None:
    """Mallory lists threads among 300,000 she may not read: the scan is stopped at the read limit with a final
    DEADLINE_EXCEEDED, and the worker still serves reads and writes right after."""
    _, bus = await workers.start(read_timeout_ms=20)
    await _seed_private_threads(database_url)

    started = time.monotonic()
    failure = error(await bus.call("list_threads", {"limit": 10}, context=MALLORY, timeout=60))
    assert failure["code"] == "DEADLINE_EXCEEDED" and failure["retryable"] is False, failure
    assert failure["details"] == {"reason": "read_timeout", "timeout_ms": 20}
    assert time.monotonic() - started < 5

    mine = f"after-{uuid.uuid4().hex[:8]}"
    output(await bus.call("save_thread", {"thread_id": mine, "messages": [{"role": "user", "content": "hi"}]}))
    assert (await _read(bus, "get_thread", {"thread_id": mine}))["messages"][0]["content"] == "hi"
    assert (await _read(bus, "list_threads", {"limit": 1}, context=ALICE))["count"] == 1  # found at once
    assert await bus.dlq_messages() == []


async def _read(bus: Bus, action: str, params: dict[str, Any], **data: Any) -> dict[str, Any]:
    """A cheap read under the test's tiny limit. The limit is wall-clock time, and this machine is shared by
    whole test suites: a millisecond read can be descheduled past 20 ms now and then, so it gets three tries."""
    for _ in range(2):
        reply = await bus.call(action, params, **data)
        if reply["type"] == "ai.team.result":
            return output(reply)
        assert error(reply)["code"] == "DEADLINE_EXCEEDED", reply
    return output(await bus.call(action, params, **data))


COUNT_TO = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n}) SELECT count(*) FROM c"


async def test_the_read_limit_stops_reads_and_spares_the_writer(database_url: str) -> None:
    """At the engine boundary: a pure-CPU read past the limit is DEADLINE_EXCEEDED; the same connection, taken
    by the writer afterwards, runs a long statement to the end."""
    engine = create_engine(database_url, pool_size=1, read_timeout_ms=50)  # type: ignore[call-arg]
    try:
        with pytest.raises(DeadlineExceeded) as stopped:
            async with read_connection(engine) as conn:
                await conn.execute(text(COUNT_TO.format(n=100_000_000)))
        assert stopped.value.retryable is False
        async with read_connection(engine) as conn:  # the next read on that connection starts a fresh clock
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1

        conn = await engine.connect()
        try:
            await db.unlimited(conn)
            started = time.monotonic()
            n = 2_000_000
            assert (await conn.execute(text(COUNT_TO.format(n=n)))).scalar_one() == n
            assert time.monotonic() - started > 0.05  # it did run past the read limit, uninterrupted
        finally:
            await conn.close()
    finally:
        await engine.dispose()
