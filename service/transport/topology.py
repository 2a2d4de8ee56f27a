"""Declares what the worker consumes from: exchange, the shared and the node's own command queue, DLX, DLQ.

The shared queue takes ``cmd.storage.any``, which any worker of a pool may answer. ``cmd.storage.<node>`` is
bound to the node's own queue only, so a targeted command reaches that node (or waits for it) and never a
sibling; with no such queue the broker returns it unroutable to the sender.
"""

from __future__ import annotations

from typing import Any, cast

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from contracts import topology
from service.settings import Settings


def exchange(settings: Settings) -> RabbitExchange:
    return RabbitExchange(settings.exchange, type=ExchangeType.TOPIC, durable=True, auto_delete=False)


def dead_letter_exchange(settings: Settings) -> RabbitExchange:
    return RabbitExchange(settings.dlx, type=ExchangeType.FANOUT, durable=True, auto_delete=False)


CLASSIC, QUORUM = "classic", "quorum"


def command_queue_arguments(settings: Settings) -> dict[str, str | int]:
    """The arguments of every command queue, by ``STORAGE_QUEUE_TYPE``; all are dead-lettered to the DLX.

    Classic: priorities 0-255, the queue on one broker node. Quorum: replicated over the cluster, without
    priorities (RabbitMQ 3.10 has none for quorum queues), and a command returned to the queue more than
    ``STORAGE_DELIVERY_LIMIT`` times (its worker died holding it each time) is dead-lettered instead of
    looping. The broker refuses to redeclare a queue with other arguments, so a worker cannot start against
    queues of the other type (``service.startup.broker.queue_mismatch`` tells the operator).
    """
    if settings.queue_type == QUORUM:
        return {
            "x-queue-type": QUORUM,
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": settings.dlx,
        }
    return {"x-queue-type": CLASSIC, "x-max-priority": topology.MAX_PRIORITY, "x-dead-letter-exchange": settings.dlx}


def command_queue(settings: Settings, name: str | None = None, routing_key: str | None = None) -> RabbitQueue:
    """The shared command queue; with ``name`` and ``routing_key``, another command queue of the same kind."""
    return RabbitQueue(
        name or settings.queue,
        durable=True,
        arguments=cast("Any", command_queue_arguments(settings)),  # they name their type: no overload can tell it
        routing_key=routing_key or settings.routing_keys[0],
    )


def node_queue(settings: Settings) -> RabbitQueue:
    """This node's own queue, with the shared queue's arguments (priorities or quorum, dead-lettering)."""
    return command_queue(settings, settings.node_queue, settings.routing_keys[1])


def dead_letter_queue(settings: Settings) -> RabbitQueue:
    """Quorum with quorum command queues: on a cluster the refused commands then survive a node's loss too,
    and dead-lettering never depends on the one node a classic DLQ would live on."""
    if settings.queue_type == QUORUM:
        return RabbitQueue(settings.dlq, queue_type=QueueType.QUORUM, durable=True)
    return RabbitQueue(settings.dlq, durable=True)


async def declare(broker: RabbitBroker, settings: Settings) -> None:
    """Idempotent: declares everything and binds each command queue to its key.

    A worker of an earlier version bound its node key to the shared queue; that binding is removed here, so
    targeted commands stop reaching whichever sibling takes them from the shared queue.
    """
    main = await broker.declare_exchange(exchange(settings))
    dlx = await broker.declare_exchange(dead_letter_exchange(settings))
    dlq = await broker.declare_queue(dead_letter_queue(settings))
    await dlq.bind(dlx, routing_key="")
    shared_key, node_key = settings.routing_keys
    commands = await broker.declare_queue(command_queue(settings))
    await commands.bind(main, routing_key=shared_key)
    await commands.unbind(main, routing_key=node_key)
    own = await broker.declare_queue(node_queue(settings))
    await own.bind(main, routing_key=node_key)
