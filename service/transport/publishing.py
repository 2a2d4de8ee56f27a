"""The reply publish: onto the channel the command came in on, durable, and not holding the channel meanwhile."""

from __future__ import annotations

from typing import cast

import aiormq
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic
from pamqp.common import FieldTable

from contracts import topology as names


async def publish_reply(
    command: AbstractIncomingMessage,
    body: bytes,
    *,
    correlation_id: str | None,
    message_id: str | None,
    app_id: str | None = None,
    headers: FieldTable | None = None,
) -> None:
    """Publish ``body`` to the command's ``reply_to`` with the AMQP properties of docs/contract.md §1.

    Returns when the broker confirmed it (the channel has publisher confirms on): the reply is durable
    before the command is acked. ``wait=False``: the channel's lock is not held until the writer task has
    sent the frame (aiormq's default serialises every publish of the channel behind the previous one's
    socket write). aiormq's abstract channel leaves ``wait`` out; the channel an incoming message carries is
    always its ``Channel``.
    """
    assert command.reply_to is not None, "only a command with a reply_to is answered"
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        priority=names.PRIORITY_REPLY,
        correlation_id=correlation_id,
        message_id=message_id,
        app_id=app_id,
        headers=headers or None,
    )
    await cast(aiormq.Channel, command.channel).basic_publish(
        body, exchange="", routing_key=command.reply_to, properties=properties, mandatory=False, wait=False
    )
