"""Live events: a private queue bound to some routing keys of the main exchange, read as an async queue.

A watcher must bind before it catches up (or an event committed in between would be in neither), and it
must learn when the broker connection was lost, since events published meanwhile went to a queue that no
longer existed. So a ``Subscription`` hands out message bodies and, in their stream, a ``GAP`` marker: the
robust connection came back (queue re-declared and re-bound), or the client fell too far behind and dropped
what it held. After a ``GAP`` the reader catches up through ``changes_since`` before trusting the stream again.

The queue is exclusive and auto-deleted: nobody else reads it and it goes with the subscription or the
connection. Which routing keys a broker identity may bind is the broker's topic permissions (read), not the
worker's: the bus carries a pointer for every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import ChannelAccessRefused

from buffer.errors import BrokerUnavailable
from contracts import PermissionDenied

log = logging.getLogger(__name__)


class _Gap:
    """Events may be missing before the next one: catch up."""

    def __repr__(self) -> str:
        return "GAP"


GAP: Final = _Gap()
MAX_PENDING: Final = 10_000
"""Bodies a subscription holds for a slow reader; past it they are dropped for one ``GAP`` (caught up later)."""

Closer = Callable[[], Awaitable[None]]


class Subscription:
    """Bodies in arrival order, with ``GAP`` where some may be missing. Fed by a transport, read by a watcher."""

    def __init__(self, routing_keys: Sequence[str], *, max_pending: int = MAX_PENDING) -> None:
        self.routing_keys = tuple(routing_keys)
        self.max_pending = max_pending
        self.gaps = 0
        """GAP markers handed in (reconnects and overflows): each one costs the reader a catch-up."""
        self._items: asyncio.Queue[bytes | _Gap | None] = asyncio.Queue()
        self._closers: list[Closer] = []
        self.closed = False

    def on_close(self, closer: Closer) -> None:
        self._closers.append(closer)

    def deliver(self, body: bytes) -> None:
        if self.closed:
            return
        if self._items.qsize() >= self.max_pending:
            log.warning("a watcher fell %d events behind: dropped them, it catches up instead", self.max_pending)
            while not self._items.empty():
                self._items.get_nowait()
            self.gap()
            return
        self._items.put_nowait(body)

    def gap(self) -> None:
        if not self.closed:
            self.gaps += 1
            self._items.put_nowait(GAP)

    async def get(self) -> bytes | _Gap | None:
        """The next body or ``GAP``; None once the subscription is closed."""
        if self.closed:
            return None
        return await self._items.get()

    def pending(self) -> int:
        return self._items.qsize()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._items.put_nowait(None)  # wakes a reader waiting in get()
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer()


async def open_subscription(
    conn: AbstractRobustConnection, exchange_name: str, routing_keys: Sequence[str]
) -> Subscription:
    """Declare, bind and consume a private queue on ``conn``'s own channel; bound when this returns."""
    subscription = Subscription(routing_keys)
    try:
        channel = await conn.channel()
    except CONNECTION_EXCEPTIONS as exc:
        raise BrokerUnavailable(f"cannot open a channel for events: {exc}", {"error": type(exc).__name__}) from exc

    async def close_channel() -> None:
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await channel.close()

    subscription.on_close(close_channel)
    try:
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(f"storage.watch.{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)

        async def on_message(message: AbstractIncomingMessage) -> None:
            subscription.deliver(message.body)

        consumer_tag = await queue.consume(on_message, no_ack=True)
    except ChannelAccessRefused as exc:
        await subscription.close()
        raise PermissionDenied(
            "the broker does not let this identity read these events (its topic permissions)",
            {"routing_keys": list(routing_keys)},
        ) from exc
    except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
        await subscription.close()
        raise BrokerUnavailable(f"cannot subscribe to events: {exc}", {"error": type(exc).__name__}) from exc

    def on_reconnect(*_: Any) -> None:
        subscription.gap()

    async def forget() -> None:
        conn.reconnect_callbacks.discard(on_reconnect)
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await queue.cancel(consumer_tag)  # first: a queue deleted under its consumer makes the broker complain
            await queue.delete(if_unused=False, if_empty=False)

    conn.reconnect_callbacks.add(on_reconnect)
    subscription.on_close(forget)
    return subscription
