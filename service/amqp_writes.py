"""AMQP frames sent in one socket write per loop turn, instead of one write (and one send syscall) per frame.

aiormq's writer task hands every frame to the socket on its own: a reply's publish, each ack, each
heartbeat. On loopback every ``send()`` also runs the receiving side's TCP work and wakes the broker, and
under load those syscalls were a quarter of the worker's CPU (py-spy: ``StreamWriter.write``), CPU taken
from the broker on the same cores. Frames written in the same loop turn now leave in one write, in the
order they were written; ``drain``, ``close`` and ``write_eof`` send what is pending first, so flow
control and the closing handshake see every frame.

aiormq builds its transports through a ``TransportFactory`` (its extension point), but aio-pika and
FastStream do not pass one through, so ``install()`` makes the coalescing factory aiormq's default for
plain TCP in this process. TLS connections keep aiormq's own factory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiormq import connection as _aiormq_connection

log = logging.getLogger(__name__)


class CoalescingWriter:
    """A ``StreamWriter`` whose writes of one loop turn reach the transport as one."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if self._writer.transport.is_closing():
            return  # the connection is gone: aiormq learns it from the reader, as with a direct write
        self._writer.write(data)

    async def drain(self) -> None:
        self._flush()
        await self._writer.drain()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def write_eof(self) -> None:
        self._flush()
        self._writer.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


class CoalescingTCPTransportFactory(_aiormq_connection.TCPTransportFactory):
    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().create(url, **kwargs)
        return reader, CoalescingWriter(writer)  # type: ignore[return-value]


def install() -> None:
    """Make plain-TCP aiormq connections opened from now on in this process coalesce their writes."""
    current = getattr(_aiormq_connection, "TCPTransportFactory", None)
    if current is None or not hasattr(current, "create"):
        log.warning("aiormq has no TCPTransportFactory: AMQP frames are written one by one")
        return
    if current is not CoalescingTCPTransportFactory:
        _aiormq_connection.TCPTransportFactory = CoalescingTCPTransportFactory  # type: ignore[misc]
