"""Acks in bulk: one ``basic.ack(multiple=True)`` for the commands settled in the same loop turn.

Acking each delivery on its own costs the worker a frame, a socket write and a drain wait per command,
and the broker (on the same cores) one more frame to handle. Commands settle in bursts (one group commit
answers dozens at once), so the acks of a loop turn go out together: one frame covering the longest
settled run at the head of the channel's unacked deliveries, and a single ack for each settled delivery
behind one still running, so a slow command never holds back the acks of those after it. An ack is
still sent only after the command's reply was confirmed; a rejection goes out at once, on its own.
A delivery that was never settled (its handling failed) stays unacked, and the acks after it are single.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import AbstractChannel


class BulkAcks:
    def __init__(self) -> None:
        self._channel: AbstractChannel | None = None
        self._open: deque[int] = deque()
        """Delivery tags of the current channel taken and not yet acked or rejected, in delivery order."""
        self._settled: set[int] = set()
        """Of those, the ones whose command finished: to be acked at the next flush."""
        self._flushing = False

    def taken(self, message: AbstractIncomingMessage) -> None:
        if message.channel is not self._channel:  # a new channel (after a reconnect): its tags start again
            self._channel = message.channel
            self._open.clear()
            self._settled.clear()
        if message.delivery_tag is not None:
            self._open.append(message.delivery_tag)

    async def ack(self, message: AbstractIncomingMessage) -> None:
        tag = message.delivery_tag
        if message.channel is not self._channel or tag is None:
            await message.ack()  # a channel already replaced: the ack fails as it would on its own
            return
        self._settled.add(tag)
        if self._flushing:
            return  # the flush already waiting in this loop turn takes it along
        self._flushing = True
        try:
            await asyncio.sleep(0)  # let the other commands finishing in this turn settle theirs first
            await self._flush()
        finally:
            self._flushing = False

    async def reject(self, message: AbstractIncomingMessage) -> None:
        await message.reject(requeue=False)
        tag = message.delivery_tag
        if message.channel is self._channel and tag is not None and tag in self._open:
            self._open.remove(tag)

    async def _flush(self) -> None:
        channel, open_tags, settled = self._channel, self._open, self._settled
        assert channel is not None  # ack() flushes only deliveries taken on the current channel
        head = None
        while open_tags and open_tags[0] in settled:
            head = open_tags.popleft()
            settled.discard(head)
        behind = sorted(settled)
        for tag in behind:
            open_tags.remove(tag)
        settled.clear()
        if head is not None:
            await channel.basic_ack(head, multiple=True, wait=False)
        for tag in behind:
            await channel.basic_ack(tag, multiple=False, wait=False)
