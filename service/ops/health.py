"""The health check: a ping over the bus, as an agent would send it."""

from __future__ import annotations

import asyncio

import aio_pika

from contracts import make_command, topology
from service.settings import Settings


async def ping_over_bus(settings: Settings, *, timeout_s: float) -> tuple[bool, str]:
    """(answered, one-line reason). Addressed to this node, so another node answering does not count."""
    try:
        async with asyncio.timeout(timeout_s):
            conn = await aio_pika.connect(settings.amqp_url)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        return False, f"unhealthy: cannot connect to RabbitMQ: {exc or type(exc).__name__}"
    try:
        channel = await conn.channel()
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(settings.exchange, ensure=True)
        envelope = make_command("ping", source="storage-worker-health", target_node=settings.node_name)
        await exchange.publish(
            aio_pika.Message(
                envelope.to_json_bytes(),
                reply_to=replies.name,
                correlation_id=envelope.id,
                expiration=timeout_s,
                content_type="application/json",
            ),
            routing_key=topology.node_routing_key(settings.node_name),
        )
        try:
            async with asyncio.timeout(timeout_s):
                async with replies.iterator() as messages:
                    async for message in messages:
                        await message.ack()
                        if message.correlation_id == envelope.id:
                            return True, f"healthy: {settings.node_name} answered ping"
        except TimeoutError:
            return False, f"unhealthy: no ping reply from {settings.node_name} within {timeout_s:g}s"
        return False, "unhealthy: reply queue closed"
    except aio_pika.exceptions.ChannelClosed as exc:
        return False, f"unhealthy: {exc}"
    finally:
        await conn.close()
