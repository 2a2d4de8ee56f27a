"""AMQP frames of one loop turn leave in one socket write, in order, and nothing is held back past a drain or close."""

from __future__ import annotations

import asyncio

import aio_pika

from service import amqp_writes
from service.amqp_writes import CoalescingWriter


class _Transport:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


class _RecordingWriter:
    """What aiormq's writer task sees of a ``StreamWriter``, recording each write that reaches the socket."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.writes: list[bytes] = []
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        self.events.append(f"drain after {len(self.writes)} writes")

    def close(self) -> None:
        self.events.append(f"close after {len(self.writes)} writes")

    def write_eof(self) -> None:
        self.events.append(f"eof after {len(self.writes)} writes")

    def can_write_eof(self) -> bool:
        return True


def _coalescing() -> tuple[CoalescingWriter, _RecordingWriter]:
    inner = _RecordingWriter()
    return CoalescingWriter(inner), inner  # type: ignore[arg-type]


async def test_frames_of_one_loop_turn_leave_in_one_write_in_order() -> None:
    """Three frames written back to back reach the socket as one write holding them in their order."""
    writer, inner = _coalescing()
    for frame in (b"publish", b"ack", b"heartbeat"):
        writer.write(frame)
    assert inner.writes == [], "nothing leaves before the loop turn ends"
    await asyncio.sleep(0)
    assert inner.writes == [b"publishackheartbeat"]
    writer.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes == [b"publishackheartbeat", b"next"]


async def test_drain_close_and_eof_send_what_is_pending_first() -> None:
    """Flow control and the closing handshake see every frame written before them."""
    writer, inner = _coalescing()
    writer.write(b"a")
    await writer.drain()
    assert inner.writes == [b"a"] and inner.events == ["drain after 1 writes"]
    writer.write(b"b")
    writer.write_eof()
    writer.write(b"c")
    writer.close()
    assert inner.writes == [b"a", b"b", b"c"]
    assert inner.events[1:] == ["eof after 2 writes", "close after 3 writes"]
    assert writer.can_write_eof() is True, "the rest of the StreamWriter API passes through"
    await asyncio.sleep(0)
    assert inner.writes == [b"a", b"b", b"c"], "a flush already done is not repeated"


async def test_a_closing_transport_gets_no_more_writes() -> None:
    """Frames left when the connection is already going away are dropped, as a closed socket would."""
    writer, inner = _coalescing()
    writer.write(b"late")
    inner.transport.closing = True
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_a_connection_opened_after_install_publishes_and_consumes(amqp_url: str) -> None:
    """With coalescing installed, a real broker round trip works: persistent publish, confirm, consume, ack."""
    amqp_writes.install()
    amqp_writes.install()  # twice is harmless
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True)
        bodies = [f"m{i}".encode() for i in range(50)]
        await asyncio.gather(
            *(channel.default_exchange.publish(aio_pika.Message(b), routing_key=queue.name) for b in bodies)
        )
        received: list[bytes] = []
        async with queue.iterator() as messages:
            async for message in messages:
                received.append(message.body)
                await message.ack()
                if len(received) == len(bodies):
                    break
        assert received == bodies
    finally:
        await connection.close()
