"""Over the bus as an operator: the health check (a ping, as an agent would send it) and CONTROL signals."""

from __future__ import annotations

import asyncio

import aio_pika

from contracts import (
    CONTROL_TYPE,
    ControlData,
    ControlEnvelope,
    ControlScope,
    control_routing_key,
    make_command,
    topology,
)
from contracts.control import PRIORITY_CONTROL
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


async def send_signal(settings: Settings, target: str, scope: ControlScope, reason: str | None) -> str:
    """Publish one CONTROL signal as the broker user of ``AMQP_URL`` (its ``user_id``, which the broker checks),
    with a publisher confirm; the routing key it went out with. Whether it is obeyed is the nodes' call."""
    sender = topology.broker_user(settings.amqp_url)
    envelope = ControlEnvelope(source=f"storage-worker-signal/{sender}", data=ControlData(reason=reason))
    key = control_routing_key(target, scope)
    async with await aio_pika.connect(settings.amqp_url) as conn:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(settings.exchange, ensure=True)
        await exchange.publish(
            aio_pika.Message(
                envelope.to_json_bytes(),
                message_id=envelope.id,
                type=CONTROL_TYPE,
                priority=PRIORITY_CONTROL,
                content_type="application/json",
                user_id=sender,
            ),
            routing_key=key,
        )
    return key
