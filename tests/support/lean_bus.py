"""A lean agent for load and fault tests: publishes thousands of commands with confirms, files every reply.

Unlike ``Bus`` (one call, one awaited reply) it keeps *every* reply that arrives, by correlation id, so a
test can see a command answered twice (a redelivery after a crash) and compare the copies. Publishing
runs in windows of concurrent confirmed publishes, which is what makes 5,000 commands take seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from contracts import topology
from tests.support.broker import broker_user

PUBLISH_WINDOW = 256


class LeanBus:
    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange_name = exchange
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        """Every reply received, by the correlation id it carries, in arrival order."""
        self.raw: dict[str, list[bytes]] = defaultdict(list)
        """The same replies as received, byte for byte (to check them as strictly as another language would)."""
        self.undecodable: list[bytes] = []
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._reply_queue: AbstractQueue | None = None
        self._waiting: set[str] = set()
        self._all_in = asyncio.Event()
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> LeanBus:
        self._conn = await aio_pika.connect(self.url)
        self._channel = await self._conn.channel(publisher_confirms=True)
        self._exchange = await self._channel.get_exchange(self.exchange_name)
        self._reply_queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def admin(self) -> dict[str, str]:
        """AMQP properties that make a command an admin's: ``publish(..., **bus.admin)`` sends the
        broker-validated ``user_id`` of this connection's user (in STORAGE_ADMINS of test workers)."""
        return {"user_id": broker_user(self.url)}

    @property
    def reply_to(self) -> str:
        assert self._reply_queue is not None
        return self._reply_queue.name

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None
        return self._channel

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            self.undecodable.append(message.body)
            return
        body["_amqp"] = {"correlation_id": message.correlation_id, "message_id": message.message_id}
        cid = message.correlation_id or ""
        self.replies[cid].append(body)
        self.raw[cid].append(message.body)
        self._arrived.set()
        if cid in self._waiting:
            self._waiting.discard(cid)
            if not self._waiting:
                self._all_in.set()

    async def publish(
        self,
        body: bytes,
        correlation_id: str | None,
        *,
        reply: bool = True,
        routing_key: str = topology.ROUTING_KEY_ANY,
        **properties: Any,
    ) -> None:
        """One confirmed publish; the reply (if asked for) lands in ``replies[correlation_id]``."""
        assert self._exchange is not None
        message = aio_pika.Message(
            body,
            correlation_id=correlation_id,
            reply_to=self.reply_to if reply else None,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            **properties,
        )
        await self._exchange.publish(message, routing_key=routing_key)

    async def publish_many(self, commands: Iterable[tuple[str, bytes]], *, window: int = PUBLISH_WINDOW) -> int:
        """Publish (correlation id, body) pairs, ``window`` confirms in flight at a time; returns how many."""
        batch: list[asyncio.Task[None]] = []
        sent = 0
        for cid, body in commands:
            batch.append(asyncio.ensure_future(self.publish(body, cid)))
            if len(batch) >= window:
                await asyncio.gather(*batch)
                sent += len(batch)
                batch = []
        if batch:
            await asyncio.gather(*batch)
            sent += len(batch)
        return sent

    async def wait_replies(self, correlation_ids: Iterable[str], timeout_s: float) -> set[str]:
        """Wait until each id has at least one reply; returns the ids still unanswered at the timeout."""
        self._waiting = {cid for cid in correlation_ids if not self.replies.get(cid)}
        self._all_in.clear()
        if self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), timeout_s)
        missing, self._waiting = self._waiting, set()
        return missing

    async def wait_answered(self, count: int, timeout_s: float) -> int:
        """Wait until ``count`` commands have been answered (any of them); returns how many are."""
        async with asyncio.timeout(timeout_s):
            while len(self.replies) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return len(self.replies)

    async def drain_queue(self, name: str) -> list[AbstractIncomingMessage]:
        """Take every message waiting in a queue (a DLQ, or commands no worker took), acking them."""
        assert self._channel is not None
        queue = await self._channel.declare_queue(name, passive=True)
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return found

    async def depth(self, name: str) -> int:
        """Messages ready in a queue right now (not counting those delivered and unacked)."""
        assert self._channel is not None
        queue = await self._channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
