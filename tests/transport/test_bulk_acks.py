"""Bulk acks: one frame for a turn's settled head, single acks behind a running command, rejects at once."""

from __future__ import annotations

import asyncio
from typing import Any

from service.transport.acks import BulkAcks


class FakeChannel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.frames.append(("ack", tag, multiple))


class FakeMessage:
    def __init__(self, channel: FakeChannel, tag: int) -> None:
        self.channel = channel
        self.delivery_tag = tag

    async def ack(self) -> None:
        self.channel.frames.append(("ack", self.delivery_tag, False))

    async def reject(self, requeue: bool = False) -> None:
        self.channel.frames.append(("reject", self.delivery_tag, requeue))


def deliveries(acks: BulkAcks, channel: FakeChannel, count: int) -> list[Any]:
    messages = [FakeMessage(channel, tag) for tag in range(1, count + 1)]
    for message in messages:
        acks.taken(message)  # type: ignore[arg-type]
    return messages


def outstanding(frames: list[tuple[str, int, bool]], taken: int) -> set[int]:
    """What the broker still counts as unacked after these frames (multiple=True covers every earlier tag)."""
    left = set(range(1, taken + 1))
    for kind, tag, multiple in frames:
        if kind == "ack" and multiple:
            left -= set(range(1, tag + 1))
        else:
            left.discard(tag)
    return left


async def test_commands_settling_in_one_turn_share_one_ack_frame() -> None:
    acks, channel = BulkAcks(), FakeChannel()
    messages = deliveries(acks, channel, 50)
    await asyncio.gather(*(acks.ack(m) for m in messages))
    assert channel.frames == [("ack", 50, True)]
    assert outstanding(channel.frames, 50) == set()


async def test_a_slow_command_never_holds_back_the_acks_behind_it() -> None:
    acks, channel = BulkAcks(), FakeChannel()
    first, *rest = deliveries(acks, channel, 5)
    await asyncio.gather(*(acks.ack(m) for m in rest))
    assert channel.frames == [("ack", 2, False), ("ack", 3, False), ("ack", 4, False), ("ack", 5, False)]
    assert outstanding(channel.frames, 5) == {1}, "the running command's delivery must stay unacked"
    await acks.ack(first)
    assert channel.frames[-1] == ("ack", 1, True) and outstanding(channel.frames, 5) == set()
    more = [FakeMessage(channel, 6), FakeMessage(channel, 7)]
    for message in more:
        acks.taken(message)  # type: ignore[arg-type]
    await asyncio.gather(*(acks.ack(m) for m in more))  # type: ignore[arg-type]
    assert channel.frames[-1] == ("ack", 7, True), "the head moved on past the acked ones"


async def test_a_rejection_goes_out_at_once_and_later_bulk_acks_do_not_cover_it() -> None:
    acks, channel = BulkAcks(), FakeChannel()
    one, two, three = deliveries(acks, channel, 3)
    await acks.reject(two)
    assert channel.frames == [("reject", 2, False)]
    await asyncio.gather(acks.ack(one), acks.ack(three))
    assert channel.frames[1:] == [("ack", 3, True)]
    assert outstanding(channel.frames, 3) == set()


async def test_an_unsettled_delivery_stays_unacked_and_later_acks_are_single() -> None:
    """A command whose handling failed is left for redelivery: no bulk ack may cover its tag."""
    acks, channel = BulkAcks(), FakeChannel()
    _failed, *others = deliveries(acks, channel, 4)
    for message in others:
        await acks.ack(message)
    assert outstanding(channel.frames, 4) == {1}
    assert all(not multiple for _, _, multiple in channel.frames)


async def test_a_new_channel_starts_its_own_tags() -> None:
    """After a reconnect the tags start again at 1; the old channel's unacked deliveries are the broker's."""
    acks, old, new = BulkAcks(), FakeChannel(), FakeChannel()
    deliveries(acks, old, 3)
    messages = deliveries(acks, new, 2)
    await asyncio.gather(*(acks.ack(m) for m in messages))
    assert new.frames == [("ack", 2, True)] and old.frames == []
