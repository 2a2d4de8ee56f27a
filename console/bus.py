"""The console's two ways onto the bus: the storage client for commands, one AMQP connection for the rest.

Commands go through ``buffer.StorageClient`` acting as the broker user of ``AMQP_URL`` (``user_id=True``), so
the worker applies its ACL to the console as to any agent. Queue depths, node events and dead letters need
plain AMQP: one robust connection, a short-lived channel per question (a passive declare of a missing queue
closes its channel, and that must not take the node board's channel with it).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPError

from buffer import StorageClient
from console.nodes import NodeBoard
from console.settings import ConsoleSettings

AGENT_ID = "storage-console"


@dataclass(frozen=True, slots=True)
class QueueDepth:
    name: str
    messages: int | None
    consumers: int | None
    problem: str | None = None


class ConsoleBus:
    """Opened once by the app's lifespan, shared by every request."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self._scratch = Path(tempfile.mkdtemp(prefix="storage-console-"))
        self.storage = StorageClient(
            amqp_url=settings.amqp_url,
            exchange=settings.exchange,
            agent_id=AGENT_ID,
            user_id=True,
            call_timeout_s=settings.call_timeout_s,
            retries=0,  # a page shows the error now rather than after a minute of backoff
            buffer_dir=self._scratch / "buffer",  # the console sends no bufferable write; the client wants a place
        )
        self.nodes = NodeBoard(settings.exchange)
        self._connection: AbstractRobustConnection | None = None

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("the console's bus is not open")
        return self._connection

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.settings.amqp_url, client_properties={"connection_name": AGENT_ID}
        )
        await self.nodes.start(self._connection)
        await self.storage.start()

    async def close(self) -> None:
        await self.storage.close()
        await self.nodes.close()
        if self._connection is not None:
            await self._connection.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    async def queue_depth(self, name: str) -> QueueDepth:
        """Messages ready and consumers of a queue, by a passive declare: never creates or changes it."""
        try:
            channel = await self.connection.channel()
        except AMQPError as exc:
            return QueueDepth(name, None, None, f"broker: {exc}")
        try:
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            return QueueDepth(name, result.message_count, result.consumer_count)
        except AMQPError as exc:
            return QueueDepth(name, None, None, f"not declared ({type(exc).__name__})")
        finally:
            if not channel.is_closed:
                await channel.close()
