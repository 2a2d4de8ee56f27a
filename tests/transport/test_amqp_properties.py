"""Class 1 at the AMQP layer: no property value an agent sends may wedge the worker's connection.

A timestamp no ``datetime`` holds used to make the worker's AMQP client fail to decode the message's
header frame: the connection closed, reconnected, received the same unacked message and closed again, for
good. Every other command waited behind it.
"""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime
from typing import Any

import pamqp.encode
import pytest

from contracts import make_command
from tests.support.bus import Bus, output

pytestmark = pytest.mark.security

OUT_OF_RANGE = struct.pack(">Q", 2**64 - 1)
"""An AMQP timestamp (u64 seconds) that no ``datetime`` can hold: the year 584,556,019."""


async def _poisoned(bus: Bus, monkeypatch: pytest.MonkeyPatch, **properties: Any) -> asyncio.Future[dict[str, Any]]:
    """Publish a ping whose timestamps (property or header) encode as ``OUT_OF_RANGE``, as a raw client could."""
    command = make_command("ping", {}, source="mallory")
    with monkeypatch.context() as patch:
        patch.setitem(pamqp.encode.METHODS, "timestamp", lambda _value: OUT_OF_RANGE)
        patch.setattr(pamqp.encode, "timestamp", lambda _value: OUT_OF_RANGE)  # header tables call it by name
        future = await bus.publish(command.to_json_bytes(), correlation_id=command.id, **properties)
    assert future is not None
    return future


async def _still_serves(bus: Bus) -> None:
    ping = make_command("ping", {}, source="agent-test")
    assert output(await bus.send(ping.to_json_bytes(), ping.id, timeout=20))["node"]


async def test_a_timestamp_property_no_calendar_holds_is_ignored(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose AMQP timestamp overflows a datetime is answered, and the worker goes on serving."""
    future = await _poisoned(bus, monkeypatch, timestamp=datetime.now(UTC))
    assert output(await asyncio.wait_for(future, 20))["node"]
    await _still_serves(bus)


async def test_a_header_timestamp_no_calendar_holds_is_ignored(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same value inside the headers table: the command settles, and the worker goes on serving."""
    await _poisoned(bus, monkeypatch, headers={"sent": datetime.now(UTC)})
    await _still_serves(bus)  # its reply_to comes after the headers, so it goes unanswered, but it settles
