"""(1) The broker's limit: a bare aio-pika consumer that only replies (persistent, confirmed) and acks.

It does what the worker must do at the least for every command — receive, publish a durable reply and
wait for the broker's confirm, ack — and nothing else, on the same queue settings and prefetch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

import aio_pika

from bench.common import PREFETCH, Names, declare_command_queue, serve_until_terminated
from contracts import topology


async def start(amqp_url: str, names: Names) -> Callable[[], Awaitable[None]]:
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


def main(amqp_url: str, names: Names, loop: str, ready: Connection) -> None:
    """``loop="uvloop"``: the same echo on the event loop the worker uses by default (a reference line only)."""
    from service.loop import run

    serve_until_terminated(lambda: start(amqp_url, names), ready, lambda main: run(main, choice=loop))
