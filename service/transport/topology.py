"""Declares what the worker consumes from: exchange, priority command queue with dead-lettering, DLX, DLQ."""

from __future__ import annotations

from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from contracts import topology
from service.settings import Settings


def exchange(settings: Settings) -> RabbitExchange:
    return RabbitExchange(settings.exchange, type=ExchangeType.TOPIC, durable=True, auto_delete=False)


def dead_letter_exchange(settings: Settings) -> RabbitExchange:
    return RabbitExchange(settings.dlx, type=ExchangeType.FANOUT, durable=True, auto_delete=False)


def command_queue(settings: Settings) -> RabbitQueue:
    return RabbitQueue(
        settings.queue,
        durable=True,
        arguments={"x-max-priority": topology.MAX_PRIORITY, "x-dead-letter-exchange": settings.dlx},
        routing_key=settings.routing_keys[0],
    )


def dead_letter_queue(settings: Settings) -> RabbitQueue:
    return RabbitQueue(settings.dlq, durable=True)


async def declare(broker: RabbitBroker, settings: Settings) -> None:
    """Idempotent: declares everything and both bindings of the command queue."""
    main = await broker.declare_exchange(exchange(settings))
    dlx = await broker.declare_exchange(dead_letter_exchange(settings))
    dlq = await broker.declare_queue(dead_letter_queue(settings))
    await dlq.bind(dlx, routing_key="")
    commands = await broker.declare_queue(command_queue(settings))
    for key in settings.routing_keys:
        await commands.bind(main, routing_key=key)
