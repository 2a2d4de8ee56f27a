"""Helpers for the operating tests: read node events, fetch the metrics endpoint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client.parser import text_string_to_metric_families


class NodeEvents:
    """A queue bound to ``evt.node.#`` on the exchange, declared before the worker starts."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self.received: asyncio.Queue[tuple[dict[str, Any], AbstractIncomingMessage]] = asyncio.Queue()
        self._conn: aio_pika.abc.AbstractConnection | None = None

    async def open(self) -> NodeEvents:
        self._conn = await aio_pika.connect(self.url)
        channel = await self._conn.channel()
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "evt.node.#")
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self.received.put((json.loads(message.body), message))

    async def next(self, event_type: str, within_s: float = 15) -> tuple[dict[str, Any], AbstractIncomingMessage]:
        """The next event of that type (others are skipped)."""
        async with asyncio.timeout(within_s):
            while True:
                body, message = await self.received.get()
                if body["data"]["event_type"] == event_type:
                    return body, message

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def __aenter__(self) -> NodeEvents:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one plain HTTP request to 127.0.0.1."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found
