"""The broker itself dies under a connected client and comes back: writes are kept, then delivered in order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import pytest

from buffer import Buffered, StorageClient
from contracts import CommandEnvelope, ResultData, ResultEnvelope
from tests.support.client import replay_emptied
from tests.support.private_broker import PrivateBroker
from tests.support.requirements import require_rabbitmq_server

pytestmark = pytest.mark.faults


class FakeStorageNode:
    """Answers every save_thread on a private broker, over a robust connection that survives the restart."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url, self.exchange = amqp_url, exchange
        self.executed: list[CommandEnvelope] = []
        self.conn: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self.conn = await aio_pika.connect_robust(self.amqp_url, reconnect_interval=0.5)
        channel = await self.conn.channel()
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(f"{self.exchange}.commands", durable=True)
        await queue.bind(exchange, routing_key="cmd.storage.any")

        async def on_command(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            envelope = CommandEnvelope.model_validate_json(message.body)
            if envelope.data.action == "ping":
                output: dict[str, object] = {"node": "fake-storage", "version": "test", "uptime_seconds": 1.0}
            else:
                self.executed.append(envelope)
                output = {"thread_id": envelope.data.params["thread_id"], "version": 1, "message_ids": []}
                output |= {"inserted": 0, "updated": 0, "trimmed": 0}
            reply = ResultEnvelope(source="fake-storage", data=ResultData(output=output))
            await channel.default_exchange.publish(
                aio_pika.Message(reply.to_json_bytes(), correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )
            await message.ack()

        await queue.consume(on_command)

    def threads(self) -> list[str]:
        return [str(e.data.params["thread_id"]) for e in self.executed]

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


async def test_client_survives_a_broker_crash(tmp_path: Path) -> None:
    """Writes made while the broker is dead come back Buffered; after it restarts they are delivered in order,
    and the same client's connection and reply queue work again without being reopened."""
    require_rabbitmq_server()
    exchange = f"test.blink.{uuid.uuid4().hex[:8]}"
    async with PrivateBroker(tmp_path / "rabbit", management=False) as broker:
        node = FakeStorageNode(broker.amqp_url, exchange)
        await node.start()
        settings = {
            "amqp_url": broker.amqp_url,
            "exchange": exchange,
            "buffer_dir": tmp_path / "buffer",
            "call_timeout_s": 1.0,
            "connect_timeout_s": 1.0,
            "retries": 2,
            "retry_initial_s": 0.05,
            "heartbeat_s": 0.5,
        }
        try:
            async with StorageClient(**settings) as storage:
                assert not isinstance(await storage.save_thread("before"), Buffered)
                await broker.kill()
                during = [await storage.save_thread(f"during-{i}") for i in range(3)]
                assert all(isinstance(o, Buffered) for o in during)

                emptied = replay_emptied(storage)
                await broker.start()
                await asyncio.wait_for(emptied.wait(), 60)
                assert not isinstance(await storage.save_thread("after"), Buffered)
        finally:
            await node.close()
    threads = node.threads()
    assert threads[0] == "before" and threads[-1] == "after"
    delivered = [t for t in threads if t.startswith("during")]
    assert sorted(set(delivered), key=delivered.index) == ["during-0", "during-1", "during-2"]
    replayed_ids = {e.id for e in node.executed}
    assert all(o.command_id in replayed_ids for o in during if isinstance(o, Buffered))
