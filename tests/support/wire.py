"""Helpers of the wire tests: register artifacts as an agent would, read the dead-letter queue without sleeping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aio_pika

from tests.support.artifacts import manifest_for
from tests.support.broker import ADMIN_AMQP, BROKER_USER
from tests.support.bus import Bus, output

__all__ = ["ADMIN_AMQP", "BROKER_USER", "dead_letters", "path_of", "register", "register_many"]


def path_of(uri: str) -> Path:
    """The local path of a ``file://`` URI the worker returned."""
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


async def register(
    bus: Bus,
    root: Path,
    data: bytes = b"artifact bytes",
    *,
    command_context: dict[str, Any] | None = None,
    amqp: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write a temp file, register it and insist on success; returns (manifest sent, output).

    ``overrides`` are manifest fields; ``command_context`` is the COMMAND's ``data.context``.
    """
    manifest = manifest_for(root, data, **overrides)
    reply = await bus.call("register_artifact", {"manifest": manifest}, context=command_context or {}, amqp=amqp)
    return manifest, output(reply)


async def register_many(bus: Bus, root: Path, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Register prepared manifests concurrently (files already written); returns the outputs in order."""
    replies = await asyncio.gather(*(bus.call("register_artifact", {"manifest": m}) for m in manifests))
    return [output(reply) for reply in replies]


async def dead_letters(bus: Bus, count: int, *, timeout_s: float = 15) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Consume ``count`` messages from the dead-letter queue, waiting for the broker to route them."""
    assert bus.channel is not None
    queue = await bus.channel.declare_queue(bus.dlq_name, durable=True, passive=True)
    found: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(timeout_s), queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            found.append(message)
            if len(found) >= count:
                break
    return found
