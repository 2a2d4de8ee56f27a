"""The nodes the console has heard of: every ``evt.node.*`` event updates one row of the board.

The console binds its own exclusive, auto-deleted queue to ``evt.node.#`` on the worker's exchange, so it
hears every node of a pool without taking anything from anybody. A node known only from heartbeats (the
console started after it registered) shows what a heartbeat carries until the next registration.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts import topology

log = logging.getLogger(__name__)

NODE_EVENTS = "evt.node.#"
MAX_NODES = 1000
"""Bound on the board: a broker flooded with made-up node names must not grow the console without end."""


@dataclass(slots=True)
class NodeView:
    """One node as last heard: what its passport said and what its last heartbeat said."""

    node_id: str
    version: str | None = None
    host: str | None = None
    pid: int | None = None
    queue: str | None = None
    started_at: datetime | None = None
    heartbeat_interval_s: float | None = None
    status: str = "unknown"
    current_tasks: int = 0
    total_tasks: int = 0
    failed_tasks: int = 0
    max_concurrent_tasks: int | None = None
    uptime_s: float | None = None
    last_seen: float = 0.0
    """``time.time()`` of the last event from the node."""
    left_reason: str | None = None

    def seconds_since(self, now: float) -> float:
        return max(0.0, now - self.last_seen)

    def stale(self, now: float, stale_after_s: float) -> bool:
        """No heartbeat for longer than the console's limit or three of the node's own intervals."""
        if self.left_reason is not None:
            return False
        limit = max(stale_after_s, 3 * (self.heartbeat_interval_s or 0))
        return self.seconds_since(now) > limit


class NodeBoard:
    """Listens to node events and keeps the latest view per node."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.nodes: dict[str, NodeView] = {}
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._channel = await connection.channel()
        exchange = await self._channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, NODE_EVENTS)
        await queue.consume(self._on_message, no_ack=True)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = json.loads(message.body)
            data = envelope["data"]
            self.observe(str(message.routing_key or data.get("event_type", "")), data.get("event_data") or {})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("node event not understood (%s): %.200r", exc, message.body)

    def observe(self, event_type: str, event: dict[str, Any], *, at: float | None = None) -> None:
        """Fold one event into the board (public for tests of the board alone)."""
        node_id = str(event.get("node_id") or event.get("node_name") or "")
        if not node_id:
            return
        view = self.nodes.get(node_id)
        if view is None:
            if len(self.nodes) >= MAX_NODES:
                return
            view = self.nodes[node_id] = NodeView(node_id)
        view.last_seen = time.time() if at is None else at
        if event_type == topology.EVT_NODE_REGISTERED:
            view.version = event.get("version")
            view.host = event.get("host")
            view.pid = event.get("pid")
            view.queue = event.get("queue")
            view.started_at = _datetime(event.get("started_at"))
            view.heartbeat_interval_s = _float(event.get("heartbeat_interval_seconds"))
            view.max_concurrent_tasks = event.get("max_concurrent_tasks")
            view.status, view.left_reason = "ready", None
            return
        view.version = event.get("version") or view.version
        view.status = str(event.get("status") or view.status)
        view.current_tasks = int(event.get("current_tasks") or 0)
        view.total_tasks = int(event.get("total_tasks") or 0)
        view.failed_tasks = int(event.get("failed_tasks") or 0)
        view.max_concurrent_tasks = event.get("max_concurrent_tasks") or view.max_concurrent_tasks
        view.uptime_s = _float(event.get("uptime_seconds"))
        if event_type == topology.EVT_NODE_DEREGISTERED:
            view.status, view.left_reason = "left", str(event.get("reason") or "deregistered")

    def sorted(self) -> list[NodeView]:
        return sorted(self.nodes.values(), key=lambda view: view.node_id)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _datetime(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
