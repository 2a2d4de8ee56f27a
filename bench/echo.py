"""(1) The broker's limit: a bare aio-pika consumer that only replies (persistent, confirmed) and acks.

It does what the worker must do at the least for every command — receive, publish a durable reply and
wait for the broker's confirm, ack — and nothing else, on the same queue settings and prefetch. Two forms:

- **lean** (``echo-lean``, the limit every ratio is taken to): the leanest transport aio-pika allows, the
  worker's own — uvloop, the reply published with ``wait=False`` on the raw channel (the confirm still
  awaited before the ack), acks in bulk (``basic.ack(multiple=True)``) through the worker's ``BulkAcks``.
- **plain** (``echo``, a reference line): aio-pika's default path — ``exchange.publish`` holds the channel
  until the frame is written, one ``ack`` per message, asyncio's own loop (or uvloop, ``echo-uvloop``).

A system that beats the lean echo shows the reference is wrong, not that it outruns the broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

import aio_pika

from bench.common import PREFETCH, Names, declare_command_queue, serve_until_terminated
from contracts import topology


async def start(amqp_url: str, names: Names) -> Callable[[], Awaitable[None]]:
    """The plain echo: aio-pika's default publish and ack."""
    conn = await aio_pika.connect(amqp_url)
    channel = await conn.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await declare_command_queue(channel, names)
    replies = channel.default_exchange

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.reply_to:
            reply = aio_pika.Message(
                message.body,
                correlation_id=message.correlation_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                priority=topology.PRIORITY_REPLY,
            )
            await replies.publish(reply, routing_key=message.reply_to, mandatory=False)
        await message.ack()

    tag = await queue.consume(on_message)

    async def stop() -> None:
        await queue.cancel(tag)
        await conn.close()

    return stop


async def start_lean(amqp_url: str, names: Names) -> Callable[[], Awaitable[None]]:
    """The lean echo: the worker's reply and ack path (service/transport/worker.py) with no command behind it."""
    from service.transport.acks import BulkAcks
    from service.transport.publishing import publish_reply

    conn = await aio_pika.connect(amqp_url)
    channel = await conn.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await declare_command_queue(channel, names)
    acks = BulkAcks()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        acks.taken(message)
        if message.reply_to:
            await publish_reply(
                message, message.body, correlation_id=message.correlation_id, message_id=message.message_id
            )
        await acks.ack(message)

    tag = await queue.consume(on_message)

    async def stop() -> None:
        await queue.cancel(tag)
        await conn.close()

    return stop


def main(amqp_url: str, names: Names, loop: str, ready: Connection) -> None:
    """The plain echo; ``loop="uvloop"`` runs it on the worker's loop (the ``echo-uvloop`` reference line)."""
    from service.transport.loop import run

    serve_until_terminated(lambda: start(amqp_url, names), ready, lambda main: run(main, choice=loop))


def main_lean(amqp_url: str, names: Names, ready: Connection) -> None:
    """The lean echo, always on uvloop as the worker runs by default."""
    from service.transport.loop import run

    serve_until_terminated(lambda: start_lean(amqp_url, names), ready, lambda main: run(main, choice="uvloop"))
