"""Calling the memory actions as named agents over the wire."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from contracts import utc_now
from tests.support.bus import Bus, error, output


def who(agent: str, trace: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"requester_id": agent}
    if trace is not None:
        context["requester_trace_id"] = trace
    return context


async def put(
    bus: Bus,
    namespace: list[str],
    key: str,
    value: dict[str, Any],
    *,
    agent: str = "agent-a",
    trace: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    body = {"namespace": namespace, "key": key, "value": value, **params}
    return output(await bus.call("put_memory", body, context=who(agent, trace)))


async def put_error(bus: Bus, params: dict[str, Any], *, agent: str = "agent-a") -> dict[str, Any]:
    return error(await bus.call("put_memory", params, context=who(agent)))


async def get(
    bus: Bus, namespace: list[str], key: str, *, agent: str = "agent-a", trace: str | None = None, **params: Any
) -> dict[str, Any]:
    """The whole reply: tests pick ``output`` or ``error``."""
    return await bus.call("get_memory", {"namespace": namespace, "key": key, **params}, context=who(agent, trace))


async def search(bus: Bus, *, agent: str = "agent-a", trace: str | None = None, **params: Any) -> dict[str, Any]:
    return output(await bus.call("search_memory", params, context=who(agent, trace)))


async def search_all(bus: Bus, *, agent: str = "agent-a", **params: Any) -> list[dict[str, Any]]:
    """Follow next_cursor to the end."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await search(bus, agent=agent, **params, **({"cursor": cursor} if cursor else {}))
        found.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def until(moment: str | datetime) -> None:
    """Wait for the wall clock to pass ``moment`` (a TTL's expiry is a point in time, not an event)."""
    when = datetime.fromisoformat(moment.replace("Z", "+00:00")) if isinstance(moment, str) else moment
    delay = (when - utc_now()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay + 0.01)
