"""``STORAGE_QUEUE_TYPE=quorum`` on the shared broker: the worker answers over quorum queues, and a command that
keeps coming back is dead-lettered after ``STORAGE_DELIVERY_LIMIT`` returns instead of looping.

Every test declares its own uniquely named exchange and queues (``make_settings``) and deletes them afterwards.
What a cluster adds (a node lost under load) is ``tests/cluster/``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelPreconditionFailed
from faststream.rabbit import RabbitBroker

from contracts import make_command, topology
from service.settings import Settings
from service.transport import topology as declared
from tests.support.artifacts import manifest_for
from tests.support.bus import output
from tests.support.databases import sqlite_url
from tests.support.workers import Workers, delete_topology, make_settings

DELIVERY_LIMIT = 2
REDELIVERY_TIMEOUT_S = 20.0


async def test_a_quorum_worker_answers_commands(workers: Workers) -> None:
    """With quorum queues the worker registers, reads and stores memory as with classic ones (both databases),
    and the queues on the broker really are quorum queues."""
    worker, bus = await workers.start(queue_type="quorum")
    s = worker.settings
    manifest = manifest_for(Path(s.storage_root.removeprefix("file://")))
    registered = output(await bus.call("register_artifact", {"manifest": manifest}))
    assert registered["registered"] is True
    got = output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}))
    assert got["manifest"]["checksum"] == manifest["checksum"]
    memory = {"namespace": ["quorum"], "key": "k", "value": {"n": 1}}
    output(await bus.call("put_memory", memory, idempotency_key=f"put-{uuid.uuid4()}"))
    read = output(await bus.call("get_memory", {"namespace": ["quorum"], "key": "k"}))
    assert read["value"] == {"n": 1}
    assert output(await bus.call("ping", priority=255))["node"] == s.node_name  # a priority is accepted, unused
    assert await _is_quorum(s, s.queue, declared.command_queue_arguments(s))
    assert await _is_quorum(s, s.dlq, {})
    assert not await _is_quorum(s, s.dlq, {"x-delivery-limit": 3})  # the probe can tell a difference


async def test_a_command_returned_past_the_delivery_limit_is_dead_lettered(amqp_url: str, tmp_path: Path) -> None:
    """A consumer that hands the same command back again and again (as a worker dying while holding it would)
    gets it ``STORAGE_DELIVERY_LIMIT`` + 1 times; then it sits in the DLQ and the command queue is empty."""
    s = make_settings(amqp_url, sqlite_url(tmp_path), tmp_path, queue_type="quorum", delivery_limit=DELIVERY_LIMIT)
    async with _declared(s), await aio_pika.connect(amqp_url) as conn:
        channel = await conn.channel()
        exchange = await channel.get_exchange(s.exchange)
        command = make_command("ping", source="agent-test")
        await exchange.publish(
            aio_pika.Message(command.to_json_bytes(), message_id=command.id, delivery_mode=2),
            routing_key=topology.ROUTING_KEY_ANY,
        )
        deliveries: list[Any] = []
        queue = await channel.declare_queue(s.queue, passive=True)

        async def hand_back(message: AbstractIncomingMessage) -> None:
            deliveries.append((message.headers or {}).get("x-delivery-count"))
            await message.nack(requeue=True)

        tag = await queue.consume(hand_back)
        dead = await _first_message(channel, s.dlq)
        await asyncio.sleep(0.5)  # were it still looping, more deliveries would come meanwhile
        await queue.cancel(tag)
        left = await channel.declare_queue(s.queue, passive=True)
    assert len(deliveries) == DELIVERY_LIMIT + 1, deliveries
    assert deliveries[1:] == list(range(1, DELIVERY_LIMIT + 1))  # RabbitMQ counts the returns
    assert dead.message_id == command.id
    deaths = cast("list[dict[str, Any]]", (dead.headers or {}).get("x-death"))
    assert deaths[0]["reason"] == "delivery_limit"
    assert left.declaration_result.message_count == 0


async def test_the_queue_types_are_told_apart_by_their_arguments(amqp_url: str, tmp_path: Path) -> None:
    """Classic keeps today's priorities; quorum has a delivery limit instead; both dead-letter to the DLX."""
    classic = make_settings(amqp_url, sqlite_url(tmp_path), tmp_path)
    quorum = classic.model_copy(update={"queue_type": "quorum", "delivery_limit": 7})
    assert declared.command_queue_arguments(classic) == {
        "x-queue-type": "classic",
        "x-max-priority": topology.MAX_PRIORITY,
        "x-dead-letter-exchange": classic.dlx,
    }
    assert declared.command_queue_arguments(quorum) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": classic.dlx,
    }
    for settings in (classic, quorum):
        assert declared.command_queue(settings).arguments == declared.command_queue_arguments(settings)


@pytest.mark.parametrize("value", ["lazy", "stream", "QUORUM"])
def test_a_queue_type_other_than_classic_or_quorum_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="queue_type"):
        Settings(_env_file=None, queue_type=value)  # type: ignore[call-arg]


@asynccontextmanager
async def _declared(settings: Settings) -> AsyncIterator[None]:
    """What the worker declares at start, without a worker consuming from it; deleted on the way out."""
    broker = RabbitBroker(settings.amqp_url, logger=None)
    await broker.connect()
    try:
        await declared.declare(broker, settings)
    finally:
        await broker.stop()
    try:
        yield
    finally:
        await delete_topology(settings)


async def _first_message(channel: aio_pika.abc.AbstractChannel, name: str) -> AbstractIncomingMessage:
    """The first message to reach queue ``name`` (taken off it)."""
    arrived: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def take(message: AbstractIncomingMessage) -> None:
        if not arrived.done():
            arrived.set_result(message)

    queue = await channel.declare_queue(name, passive=True)
    tag = await queue.consume(take, no_ack=True)
    try:
        return await asyncio.wait_for(arrived, REDELIVERY_TIMEOUT_S)
    finally:
        await queue.cancel(tag)


async def _is_quorum(settings: Settings, name: str, arguments: dict[str, Any]) -> bool:
    """Whether queue ``name`` is a quorum queue with ``arguments``: the broker accepts a redeclare only with the
    very arguments the queue has (its type among them)."""
    async with await aio_pika.connect(settings.amqp_url) as conn:
        channel = await conn.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments={**arguments, "x-queue-type": "quorum"})
        except ChannelPreconditionFailed:
            return False
    return True
