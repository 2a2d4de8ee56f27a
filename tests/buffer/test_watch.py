"""``watch`` and ``wait_for_artifact`` against the real worker and broker, on both databases."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from buffer import Buffered, ChangeWatch, StorageClient, WaitTimeout
from contracts import Change, EventData, EventEnvelope
from service.transport.worker import Worker
from tests.support.client import client_settings

TRACE = "trace-watch"


def agent(worker: Worker, tmp_path: Path, name: str, **overrides: Any) -> StorageClient:
    """An agent of ``worker`` in ``TRACE`` with its own buffer folder."""
    return StorageClient(**client_settings(worker, tmp_path / name, agent_id=name, **overrides), trace_id=TRACE)


async def upload(storage: StorageClient, trace_id: str = TRACE, **fields: Any) -> str:
    fields.setdefault("artifact_type", "report")
    out = await storage.upload_artifact(b"bytes", trace_id=trace_id, **fields)
    assert not isinstance(out, Buffered)
    return out.artifact_id


async def take(changes: ChangeWatch, count: int) -> list[Change]:
    async with asyncio.timeout(10):
        return [await anext(changes) for _ in range(count)]


async def nothing_more(changes: ChangeWatch, wait_s: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait_s):
            extra = await anext(changes)
            pytest.fail(f"one change too many: {extra}")


async def publish_again(worker: Worker, change: Change) -> None:
    """What a worker that died after publishing but before it forgot the event does: the same event again."""
    envelope = EventEnvelope(
        source=worker.settings.node_name,
        id=change.event_id,
        data=EventData(event_type=change.kind.routing_key, event_data=change.model_dump(mode="json")),
    )
    async with await aio_pika.connect(worker.settings.amqp_url) as conn:
        channel = await conn.channel()
        exchange = await channel.get_exchange(worker.settings.exchange)
        await exchange.publish(aio_pika.Message(envelope.to_json_bytes()), routing_key=change.kind.routing_key)


async def test_watch_from_a_cursor_gets_every_registration_of_the_trace_once_in_order(
    worker: Worker, tmp_path: Path
) -> None:
    """Registrations before the watch (caught up from a cursor) and during it (live) come once each, in the
    order they were made; another trace's do not; a redelivered event is dropped; a later one still comes."""
    async with agent(worker, tmp_path, "agent-producer") as producer, agent(worker, tmp_path, "agent-watcher") as me:
        start = (await me.changes_since(trace_id=TRACE)).cursor
        before = [await upload(producer) for _ in range(3)]
        await upload(producer, "trace-elsewhere")
        async with me.watch(cursor=start, trace_id=TRACE, kinds=["artifact_registered"], page_size=2) as changes:
            during = [await upload(producer) for _ in range(2)]
            got = await take(changes, 5)
            assert [c.artifact_id for c in got] == before + during
            assert [c.change_id for c in got] == sorted(c.change_id for c in got)
            await publish_again(worker, got[-1])
            later = await upload(producer)
            assert [c.artifact_id for c in await take(changes, 1)] == [later]
            await nothing_more(changes)
        resumed = await me.changes_since(got[2].change_id, trace_id=TRACE)
        assert [c.artifact_id for c in resumed.changes] == [*during, later]


async def test_watch_by_kind_sees_only_those_kinds(worker: Worker, tmp_path: Path) -> None:
    """From now on, ``thread_saved`` only: the thread's saves come, the artifact registered between does not."""
    async with agent(worker, tmp_path, "agent-producer") as producer, agent(worker, tmp_path, "agent-watcher") as me:
        await upload(producer)  # before the watch: from now means not this
        async with me.watch(kinds=["thread_saved"]) as changes:
            hello = [{"role": "user", "content": "hello"}]
            assert not isinstance(await producer.save_thread("t-watch", hello), Buffered)
            await upload(producer)
            assert not isinstance(await producer.save_thread("t-watch", hello), Buffered)
            got = await take(changes, 2)
            assert [(c.kind, c.thread_id, c.version) for c in got] == [
                ("thread_saved", "t-watch", 1),
                ("thread_saved", "t-watch", 2),
            ]
            await nothing_more(changes)


async def test_watch_mends_a_dropped_connection(worker: Worker, tmp_path: Path) -> None:
    """The watcher's broker connection drops; a registration made before it is back is not lost: it comes once."""
    async with (
        agent(worker, tmp_path, "agent-producer") as producer,
        agent(worker, tmp_path, "agent-watcher") as me,
        me.watch(trace_id=TRACE) as changes,
    ):
        first = await upload(producer)
        assert [c.artifact_id for c in await take(changes, 1)] == [first]
        conn = me.transport._conn  # type: ignore[attr-defined]
        assert conn is not None
        await conn.transport.connection.close(ConnectionError("test: connection dropped"))
        missed = await upload(producer)
        after_gap = await take(changes, 1)
        assert [c.artifact_id for c in after_gap] == [missed]
        assert changes.gaps == 1
        live = await upload(producer)
        assert [c.artifact_id for c in await take(changes, 1)] == [live]
        await nothing_more(changes)


async def test_wait_for_artifact(worker: Worker, tmp_path: Path) -> None:
    """Returns at once when the input is there; waits for one registered later; never returns one the waiter
    may not read (another agent's private artifact); times out with WaitTimeout."""
    async with agent(worker, tmp_path, "agent-producer") as producer, agent(worker, tmp_path, "agent-waiter") as me:
        plan = await upload(producer, artifact_type="plan")
        found = await me.wait_for_artifact({"trace_id": TRACE, "artifact_type": "plan"}, timeout_s=5)
        assert found.id == plan

        waiting = asyncio.create_task(me.wait_for_artifact(trace_id=TRACE, artifact_type="review", timeout_s=20))
        await asyncio.sleep(0.3)
        await upload(producer, "trace-elsewhere", artifact_type="review")
        await upload(producer, artifact_type="review", visibility="private")
        await asyncio.sleep(0.5)
        assert not waiting.done()
        review = await upload(producer, artifact_type="review")
        assert (await asyncio.wait_for(waiting, 10)).id == review

        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            await me.wait_for_artifact(trace_id=TRACE, artifact_type="verdict", timeout_s=0.5)
        assert time.monotonic() - started < 3
