"""The broker away: a committed change waits in the outbox, the write is not held up, and the event goes out
once the broker is back (a private RabbitMQ node, killed and started again on its own data)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from contracts import PutMemoryParams, Visibility
from service.core.context import HandlerContext
from service.handlers.memory import put_memory
from service.identity import Requester
from service.store import changes as store
from tests.support.databases import sqlite_url
from tests.support.private_broker import PrivateBroker
from tests.support.requirements import require_rabbitmq_server
from tests.support.workers import make_settings, running

pytestmark = pytest.mark.faults

BACK_WITHIN_S = 60.0


async def test_a_change_committed_while_the_broker_is_away_goes_out_when_it_is_back(
    tmp_path: Path, storage_root: Path
) -> None:
    require_rabbitmq_server()
    async with PrivateBroker(tmp_path / "rabbit") as broker:
        settings = make_settings(broker.amqp_url, sqlite_url(tmp_path), storage_root)
        async with running(settings) as worker:
            assert worker.services is not None
            async with await aio_pika.connect(broker.amqp_url) as amqp:  # a durable subscriber, there all along
                channel = await amqp.channel()
                queue = await channel.declare_queue("changes.subscriber", durable=True)
                await queue.bind(settings.exchange, routing_key="evt.storage.#")
            await broker.kill()

            began = time.monotonic()
            item = PutMemoryParams(namespace=["n"], key="while-away", value={}, visibility=Visibility.PUBLIC)
            written = await put_memory(item, HandlerContext(worker.services, Requester("agent", trace_id="t")))
            write_s = time.monotonic() - began
            assert written.output.version == 1 and write_s < 1.0, "the write waited for the broker"
            await asyncio.sleep(1.0)
            async with worker.services.read() as conn:
                assert await store.count_waiting(conn, settings.node_name) == 1

            await broker.start()
            back = time.monotonic()
            arrived: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

            async def first(delivered: AbstractIncomingMessage) -> None:
                if not arrived.done():
                    arrived.set_result(delivered)

            async with await aio_pika.connect(broker.amqp_url) as amqp:
                channel = await amqp.channel()
                queue = await channel.declare_queue("changes.subscriber", durable=True)
                await queue.consume(first, no_ack=True)
                message = await asyncio.wait_for(arrived, BACK_WITHIN_S)
            print(
                f"\nbroker away: write {write_s * 1000:.1f} ms, event out {time.monotonic() - back:.1f} s after restart"
            )
            body = json.loads(message.body)
            assert body["data"]["event_type"] == "evt.storage.memory_put"
            assert body["data"]["event_data"]["key"] == "while-away" and message.message_id == body["id"]
            for _ in range(50):  # the outbox row goes once the confirm is in
                async with worker.services.read() as conn:
                    if await store.count_waiting(conn, settings.node_name) == 0:
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the outbox row stayed after the broker confirmed its event")
