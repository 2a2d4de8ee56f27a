"""The client against the real worker and broker: typed calls, many in flight, outages, replay, exactly once."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from pathlib import Path

import aio_pika
import pytest

from buffer import BrokerUnavailable, Buffered, CallTimeout, NotFound, StorageClient, Unroutable
from contracts import RESULT_TYPE, ResultData, ResultEnvelope
from service.transport.worker import Worker
from tests.support.client import FAST_RETRIES, client_settings, replay_emptied


async def test_agent_uploads_gets_and_lists_artifacts(worker: Worker, buffer_dir: Path) -> None:
    """An agent uploads bytes, reads the manifest back and iterates every page of its trace's artifacts."""
    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-list") as storage:
        registered = [
            await storage.upload_artifact(f"result {i}".encode(), artifact_type="report", filename="r.txt")
            for i in range(5)
        ]
        assert not any(isinstance(r, Buffered) for r in registered)
        got = await storage.get_artifact(registered[0].artifact_id)  # type: ignore[union-attr]
        assert got.manifest.status == "completed" and got.manifest.content_type == "text/plain"
        assert Path(got.manifest.uri.removeprefix("file://")).read_bytes() == b"result 0"
        listed = [m.id async for m in storage.iter_artifacts(trace_id="trace-list", page_size=2)]
        assert sorted(listed) == sorted(r.artifact_id for r in registered)  # type: ignore[union-attr]
        with pytest.raises(NotFound):
            await storage.get_artifact(f"art_{uuid.uuid4()}")


async def test_many_calls_in_flight_each_get_their_own_reply(worker: Worker, buffer_dir: Path) -> None:
    """Fifty reads sent at once on one client each come back with the artifact they asked for."""
    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-many") as storage:
        ids = []
        for i in range(10):
            out = await storage.upload_artifact(f"payload {i}".encode(), artifact_type="report")
            assert not isinstance(out, Buffered)
            ids.append(out.artifact_id)
        wanted = [ids[i % 10] for i in range(50)]
        results = await asyncio.gather(*(storage.get_artifact(a) for a in wanted))
        assert [r.artifact_id for r in results] == wanted
        assert storage.transport.late_replies == 0


async def test_200_registrations_while_worker_is_stopped_are_buffered_then_registered_once(
    worker: Worker, buffer_dir: Path
) -> None:
    """With the worker stopped, 200 uploads each return Buffered within the retry budget; once it is back,
    replay registers all 200 exactly once and empties the buffer."""
    settings = client_settings(worker, buffer_dir, call_timeout_s=0.5)
    async with StorageClient(**settings, trace_id="trace-200") as storage:
        await storage.ping()
        await worker.stop()
        budget_s = storage.retry.budget_s(settings["call_timeout_s"])

        async def timed_upload(i: int) -> tuple[float, Buffered | object]:
            started = time.monotonic()
            out = await storage.upload_artifact(f"artifact {i}".encode(), artifact_type="report")
            return time.monotonic() - started, out

        timed = await asyncio.gather(*(timed_upload(i) for i in range(200)))
        outcomes = [out for _, out in timed]
        assert all(isinstance(o, Buffered) for o in outcomes)
        slowest = max(elapsed for elapsed, _ in timed)
        assert slowest < budget_s + 10, f"a call took {slowest:.1f} s, the retry budget is {budget_s:.1f} s"
        assert (await storage.status()).pending == 200
        artifact_ids = {o.params["manifest"]["id"] for o in outcomes}  # type: ignore[attr-defined]

        await worker.start()
        report = await storage.replay()
        assert report.remaining == 0 and report.failed == 0
        status = await storage.status()
        assert status.pending == 0 and status.failed == [] and status.quarantined == 0

        listed = [m.id async for m in storage.iter_artifacts(trace_id="trace-200", page_size=500)]
        assert len(listed) == 200 and set(listed) == artifact_ids


async def test_unreachable_broker_spills_and_another_client_replays(
    worker: Worker, buffer_dir: Path, closed_amqp_url: str
) -> None:
    """With no broker at all, writes are Buffered; a client started later on the same buffer delivers them."""
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, connect_timeout_s=2.0)
    async with StorageClient(**down, trace_id="trace-nobroker") as storage:
        uploaded = await storage.upload_artifact(b"kept while the broker was down", artifact_type="report")
        thread = await storage.save_thread("th-nobroker", [{"role": "user", "content": "hello"}])
        memory = await storage.put_memory(["agent", "notes"], "k1", {"text": "remember"})
        with pytest.raises(BrokerUnavailable):
            await storage.ping()
    assert isinstance(uploaded, Buffered) and isinstance(thread, Buffered) and isinstance(memory, Buffered)
    assert uploaded.error.details.get("reason") == "broker"

    done = asyncio.Event()
    async with StorageClient(**client_settings(worker, buffer_dir), trace_id="trace-nobroker") as storage:
        storage.on_replay.append(lambda report: done.set() if report.remaining == 0 else None)
        await asyncio.wait_for(done.wait(), 30)  # the start-up replay, no explicit call
        got = await storage.get_artifact(uploaded.params["manifest"]["id"])
        assert got.manifest.status == "completed"
        history = await storage.get_thread("th-nobroker")
        assert [m.content for m in history.messages] == ["hello"]
        assert (await storage.get_memory(["agent", "notes"], "k1")).value == {"text": "remember"}


async def test_worker_announcement_triggers_replay(worker: Worker, buffer_dir: Path) -> None:
    """A client with a long heartbeat still replays as soon as the restarted worker announces itself."""
    settings = client_settings(worker, buffer_dir, call_timeout_s=0.5, heartbeat_s=3600)
    async with StorageClient(**settings, trace_id="trace-evt") as storage:
        await storage.ping()
        await worker.stop()
        out = await storage.save_thread("th-evt", [{"role": "user", "content": "while down"}])
        assert isinstance(out, Buffered)
        emptied = replay_emptied(storage)
        await worker.start()
        await asyncio.wait_for(emptied.wait(), 30)
        assert [m.content for m in (await storage.get_thread("th-evt")).messages] == ["while down"]


async def test_unroutable_command_fails_fast(amqp_url: str, buffer_dir: Path) -> None:
    """With no storage queue bound, a call fails with Unroutable at once instead of waiting out its timeout;
    a write is buffered for later."""
    exchange = f"test.unroutable.{uuid.uuid4().hex[:8]}"
    settings = {"amqp_url": amqp_url, "exchange": exchange, "buffer_dir": buffer_dir, "call_timeout_s": 60.0}
    async with StorageClient(**settings, **{**FAST_RETRIES, "retries": 0}) as storage:
        try:
            with pytest.raises(Unroutable) as raised:
                await storage.ping()
            assert raised.value.retryable and raised.value.details["routing_key"] == "cmd.storage.any"
            out = await storage.delete_thread("th-x")
            assert isinstance(out, Buffered) and isinstance(out.error, Unroutable)
        finally:
            await _delete_exchange(amqp_url, exchange)


async def test_late_reply_is_dropped_not_given_to_another_call(amqp_url: str, buffer_dir: Path) -> None:
    """A reply arriving after its call timed out is dropped and counted; the next call still gets its own."""
    exchange = f"test.late.{uuid.uuid4().hex[:8]}"
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        commands = await channel.declare_queue(exclusive=True, auto_delete=True)
        await commands.bind(ex, routing_key="cmd.storage.any")
        received: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await commands.consume(received.put, no_ack=True)

        async def answer(command: aio_pika.abc.AbstractIncomingMessage, node: str) -> None:
            reply = ResultEnvelope(
                source="fake-storage",
                data=ResultData(output={"node": node, "version": "test", "uptime_seconds": 1.0}),
            )
            assert reply.type == RESULT_TYPE
            await channel.default_exchange.publish(
                aio_pika.Message(reply.to_json_bytes(), correlation_id=command.correlation_id),
                routing_key=command.reply_to or "",
            )

        settings = {"amqp_url": amqp_url, "exchange": exchange, "buffer_dir": buffer_dir, "call_timeout_s": 0.3}
        async with StorageClient(**settings, **{**FAST_RETRIES, "retries": 0}) as storage:
            with pytest.raises(CallTimeout):
                await storage.ping()
            first = await received.get()
            second_call = asyncio.create_task(storage.ping(timeout_s=30))
            second = await received.get()
            assert first.correlation_id != second.correlation_id
            await answer(first, "late")
            await answer(second, "fresh")
            assert (await second_call).node == "fresh"
            assert storage.transport.late_replies == 1
    finally:
        await conn.close()
        await _delete_exchange(amqp_url, exchange)


async def _delete_exchange(amqp_url: str, exchange: str) -> None:
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        await channel.exchange_delete(exchange)
    finally:
        await conn.close()


async def test_failed_connection_leaves_nothing_for_the_garbage_collector(
    worker: Worker, buffer_dir: Path, closed_amqp_url: str
) -> None:
    """Connection attempts to a broker that is down are closed at once: collecting garbage later in another thread
    (as the client's file work does) finds no half-open connection to close, so no warning escapes."""
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, retries=0)
    async with StorageClient(**down, trace_id="trace-gc") as storage:
        outs = [await storage.upload_artifact(f"gc {i}".encode(), artifact_type="report") for i in range(3)]
        with pytest.raises(BrokerUnavailable):
            await storage.ping()
    assert all(isinstance(o, Buffered) for o in outs)
    del outs
    await asyncio.to_thread(gc.collect)


async def test_stale_expected_version_raises_and_is_never_buffered(worker: Worker, buffer_dir: Path) -> None:
    """A save against an old thread version raises Aborted at once; the buffer stays empty for the agent to re-read."""
    from buffer import Aborted

    async with StorageClient(**client_settings(worker, buffer_dir)) as storage:
        first = await storage.save_thread("t-stale", [{"role": "user", "content": "hi"}])
        assert not isinstance(first, Buffered)
        with pytest.raises(Aborted) as raised:
            await storage.save_thread(
                "t-stale", [{"role": "user", "content": "again"}], expected_version=first.version - 1
            )
        assert raised.value.details["version"] == first.version
        assert storage.buffer.entries() == []
