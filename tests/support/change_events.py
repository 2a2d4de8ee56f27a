"""A subscriber of the change events (``evt.storage.#``) on a worker's exchange, as any agent would bind one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika

ALL_CHANGES = "evt.storage.#"


@dataclass
class Event:
    """One delivered EVENT: its routing key, AMQP properties and body."""

    routing_key: str
    message_id: str | None
    priority: int | None
    delivery_mode: int | None
    body: dict[str, Any]

    @property
    def change(self) -> dict[str, Any]:
        data: dict[str, Any] = self.body["data"]["event_data"]
        return data

    @property
    def change_id(self) -> int:
        return int(self.change["change_id"])


@dataclass
class Events:
    """Every event in arrival order (duplicates included), awaitable by count."""

    seen: list[Event] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _add(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        mode = message.delivery_mode
        self.seen.append(
            Event(message.routing_key or "", message.message_id, message.priority, int(mode) if mode else None,
                  json.loads(message.body))
        )  # fmt: skip
        self.changed.set()

    def unique(self) -> list[Event]:
        """The first copy of each change id, in arrival order: what a subscriber that drops duplicates keeps."""
        kept: dict[int, Event] = {}
        for event in self.seen:
            kept.setdefault(event.change_id, event)
        return list(kept.values())

    async def arrived(self, count: int, *, unique: bool = False, timeout_s: float = 20) -> None:
        """Wait until ``count`` events (distinct change ids with ``unique``) have arrived."""
        async with asyncio.timeout(timeout_s):
            while len(self.unique() if unique else self.seen) < count:
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def change_events(amqp_url: str, exchange: str, binding: str = ALL_CHANGES) -> AsyncIterator[Events]:
    """Events routed by ``binding`` on ``exchange``, through an exclusive queue of this subscriber's own."""
    received = Events()
    async with await aio_pika.connect(amqp_url) as conn:
        channel = await conn.channel()
        source = await channel.get_exchange(exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(source, routing_key=binding)

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received._add(message)

        await queue.consume(on_event, no_ack=True)
        yield received
