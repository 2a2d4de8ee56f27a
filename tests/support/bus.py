"""A raw AMQP agent that knows only docs/contract.md: publishes CloudEvents, reads replies by correlation id."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection

from contracts import make_command, topology
from service.settings import Settings


class Bus:
    """An agent on one worker's exchange: ``async with Bus.of(worker.settings) as bus`` or ``await Bus(...).open()``."""

    def __init__(self, url: str, exchange: str, dlq: str) -> None:
        self.url = url
        self.exchange_name = exchange
        self.dlq_name = dlq
        self.conn: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.replies: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.unmatched: list[dict[str, Any]] = []

    async def open(self) -> Bus:
        self.conn = await aio_pika.connect_robust(self.url)
        self.channel = await self.conn.channel()
        self.exchange = await self.channel.get_exchange(self.exchange_name)
        self.replies = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.replies.consume(self._on_reply, no_ack=True)
        return self

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    @classmethod
    def of(cls, settings: Settings) -> Bus:
        """An agent (not yet open) on the exchange those settings name."""
        return cls(settings.amqp_url, settings.exchange, settings.dlq)

    async def __aenter__(self) -> Bus:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        body["_amqp"] = {
            "correlation_id": message.correlation_id,
            "message_id": message.message_id,
            "priority": message.priority,
            "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
            "content_type": message.content_type,
        }
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(body)
        else:
            self.unmatched.append(body)

    async def publish(
        self,
        body: bytes,
        *,
        correlation_id: str | None = None,
        reply: bool = True,
        routing_key: str = topology.ROUTING_KEY_ANY,
        expect: str | None = None,
        **properties: Any,
    ) -> asyncio.Future[dict[str, Any]] | None:
        """Publish raw bytes; returns a future for the reply when ``reply`` (keyed by ``correlation_id``).

        ``expect`` is the correlation id the reply will carry when none is sent (the envelope id).
        """
        assert self.exchange is not None and self.replies is not None
        future = None
        if reply:
            key = expect or correlation_id
            assert key, "a reply needs a correlation id to be matched"
            future = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
        message = aio_pika.Message(
            body,
            correlation_id=correlation_id,
            reply_to=self.replies.name if reply else None,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            **properties,
        )
        await self.exchange.publish(message, routing_key=routing_key)
        return future

    async def call(
        self,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        source: str = "agent-test",
        timeout: float = 15,  # noqa: ASYNC109 - a per-call reply deadline reads better than a context manager
        amqp: dict[str, Any] | None = None,
        routing_key: str = topology.ROUTING_KEY_ANY,
        **data: Any,
    ) -> dict[str, Any]:
        """Send one COMMAND and wait for its reply (the whole CloudEvent, as JSON)."""
        envelope = make_command(action, params, source=source, **data)
        return await self.send(
            envelope.to_json_bytes(), envelope.id, timeout=timeout, routing_key=routing_key, **(amqp or {})
        )

    async def send(
        self,
        body: bytes,
        correlation_id: str,
        *,
        timeout: float = 15,  # noqa: ASYNC109 - see call()
        **properties: Any,
    ) -> dict[str, Any]:
        future = await self.publish(body, correlation_id=correlation_id, **properties)
        assert future is not None
        return await asyncio.wait_for(future, timeout)

    async def dlq_messages(self, *, settle_s: float = 0.3) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Everything currently in the dead-letter queue (consumed and acked)."""
        assert self.channel is not None
        await asyncio.sleep(settle_s)
        queue = await self.channel.declare_queue(self.dlq_name, durable=True, passive=True)
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return found


def output(reply: dict[str, Any]) -> dict[str, Any]:
    """The output of a RESULT reply; fails the test with the error when it is not one."""
    assert reply["type"] == "ai.team.result", f"expected a RESULT, got {reply['data']}"
    return reply["data"]["output"]  # type: ignore[no-any-return]


def error(reply: dict[str, Any]) -> dict[str, Any]:
    """The error body of an ERROR reply."""
    assert reply["type"] == "ai.team.error", f"expected an ERROR, got {reply['data']}"
    return reply["data"]["error"]  # type: ignore[no-any-return]
