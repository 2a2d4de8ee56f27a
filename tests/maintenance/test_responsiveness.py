"""A big cleanup never stalls the command stream: pings and writes keep answering while it runs."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import insert

from contracts import utc_now
from service.transport.worker import Worker
from tests.support.bus import Bus, output
from tests.support.maintenance import ago, cleanup, count, database, messages, threads

EXPIRED_THREADS = 100_000
SEED_CHUNK = 5_000
BOUND_S = 1.0


async def _seed_expired_threads(worker: Worker) -> None:
    """100,000 threads past their TTL, one message each, inserted directly (time would take an hour)."""
    now, expired = utc_now(), ago(minutes=1)
    async with database(worker.settings) as conn:
        for start in range(0, EXPIRED_THREADS, SEED_CHUNK):
            ids = [f"old-{n}" for n in range(start, start + SEED_CHUNK)]
            await conn.execute(
                insert(threads),
                [
                    {
                        "id": i,
                        "metadata": {},
                        "version": 1,
                        "message_count": 1,
                        "next_seq": 1,
                        "created_at": now,
                        "updated_at": now,
                        "deleted_at": None,
                        "expires_at": expired,
                        "owner": "agent-test",
                        "visibility": "private",
                    }
                    for i in ids
                ],
            )
            await conn.execute(
                insert(messages),
                [
                    {
                        "id": uuid.uuid4(),
                        "thread_id": i,
                        "seq": 0,
                        "role": "user",
                        "content": "old turn",
                        "metadata": {},
                        "created_at": now,
                        "deleted_at": None,
                    }
                    for i in ids
                ],
            )


async def test_ping_and_writes_answer_within_a_second_during_a_cleanup_of_100k_rows(worker: Worker, bus: Bus) -> None:
    """While cleanup removes 100,000 expired threads (200,000 rows), every ping and every save_thread sent
    meanwhile is answered within 1 s."""
    await _seed_expired_threads(worker)
    job = asyncio.create_task(cleanup(bus, "expired_threads"))
    pings: list[float] = []
    saves: list[float] = []
    live = f"live-{uuid.uuid4().hex}"
    while not job.done():
        began = time.monotonic()
        output(await bus.call("ping", timeout=10))
        pings.append(time.monotonic() - began)
        began = time.monotonic()
        output(
            await bus.call(
                "save_thread", {"thread_id": live, "messages": [{"role": "user", "content": "still here"}]}, timeout=10
            )
        )
        saves.append(time.monotonic() - began)
        await asyncio.sleep(0.05)
    assert (await job) == {"expired_threads": EXPIRED_THREADS}
    assert len(pings) >= 10, f"the cleanup was too quick to measure anything ({len(pings)} pings)"
    print(f"\n{len(pings)} pings, max {max(pings) * 1000:.0f} ms; {len(saves)} saves, max {max(saves) * 1000:.0f} ms")
    assert max(pings) < BOUND_S, f"slowest ping took {max(pings):.2f}s"
    assert max(saves) < BOUND_S, f"slowest save_thread took {max(saves):.2f}s"
    assert await count(worker.settings, threads, threads.c.id.like("old-%")) == 0
    assert await count(worker.settings, messages) == len(saves)
