"""Per-node addressing: ``cmd.storage.<node>`` reaches that node's own queue, or the sender hears it is unroutable."""

from __future__ import annotations

import uuid
from pathlib import Path

import aio_pika
import pytest

from buffer import StorageClient, Unroutable
from contracts import topology
from service.settings import Settings
from service.transport.worker import Worker
from tests.support.bus import Bus, output
from tests.support.client import client_settings
from tests.support.workers import make_settings, running, running_together

ROUNDS = 15


def _node(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def test_a_targeted_command_in_a_pool_always_reaches_its_node(
    amqp_url: str, pg_url: str, storage_root: Path
) -> None:
    """Two workers share the command queue; every ping and get_stats sent to one of them is answered by it."""
    first = make_settings(amqp_url, pg_url, storage_root, node_name=_node("pool-a"))
    second = first.model_copy(update={"node_name": _node("pool-b")})
    async with running_together(first, second), Bus.of(first) as bus:
        for _ in range(ROUNDS):
            for name in (first.node_name, second.node_name):
                key = topology.node_routing_key(name)
                ping = output(await bus.call("ping", routing_key=key, target_node=name))
                stats = output(await bus.call("get_stats", routing_key=key, target_node=name))
                assert (ping["node"], stats["node"]) == (name, name)
        answered = {output(await bus.call("ping"))["node"] for _ in range(ROUNDS)}
        assert answered <= {first.node_name, second.node_name}


async def test_a_command_for_an_unknown_node_is_unroutable(worker: Worker, tmp_path: Path) -> None:
    """No node of that name: the client hears Unroutable at once instead of waiting out a timeout."""
    storage = StorageClient(**client_settings(worker, tmp_path / "buffer", retries=0))
    async with storage:
        assert (await storage.ping(target_node=worker.settings.node_name)).node == worker.settings.node_name
        with pytest.raises(Unroutable) as caught:
            await storage.ping(target_node="ghost-node")
    assert caught.value.details["routing_key"] == "cmd.storage.ghost-node"


async def test_a_worker_removes_its_old_binding_from_the_shared_queue(settings: Settings) -> None:
    """An earlier version bound ``cmd.storage.<node>`` to the shared queue; starting the new worker unbinds it, so
    a targeted command waits in the node's queue (here: the worker paused) and never in the shared one."""
    async with await aio_pika.connect(settings.amqp_url) as conn:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        old = await channel.declare_queue(
            settings.queue,
            durable=True,
            arguments={"x-max-priority": topology.MAX_PRIORITY, "x-dead-letter-exchange": settings.dlx},
        )
        for key in settings.routing_keys:
            await old.bind(exchange, routing_key=key)
    async with running(settings) as worker, Bus.of(settings) as bus:
        assert await worker.pause()
        await bus.publish(b"{}", routing_key=topology.node_routing_key(settings.node_name), reply=False)
        await bus.publish(b"{}", routing_key=topology.ROUTING_KEY_ANY, reply=False)
        assert bus.channel is not None
        shared = await bus.channel.declare_queue(settings.queue, passive=True)
        own = await bus.channel.declare_queue(settings.node_queue, passive=True)
        assert (shared.declaration_result.message_count, own.declaration_result.message_count) == (1, 1)
        await worker.resume()


def test_a_node_name_that_would_address_others_is_refused(amqp_url: str, tmp_path: Path) -> None:
    """``any``, ``all`` and ``storage`` already address several nodes; dots and wildcards split routing keys."""
    for bad in ("any", "all", "storage", "a.b", "node#", "*", ""):
        with pytest.raises(ValueError, match="node name"):
            make_settings(amqp_url, "sqlite+aiosqlite:///x.db", tmp_path, node_name=bad)
