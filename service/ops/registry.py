"""MindBus node registry participation: announce the node, beat every few seconds, say goodbye on stop.

Other participants (orchestrators, dashboards) learn from these EVENT envelopes which storage nodes
exist, what they can do, where to send commands and how busy they are, without asking each node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from contracts import EventData, EventEnvelope, topology, utc_now
from service import __version__
from service.core.pipeline import Outcome
from service.transport import topology as declared

if TYPE_CHECKING:
    from service.transport.worker import Worker

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = "GracefulShutdown"
PUBLISH_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 0.5

_CAPABILITY_OF_ACTION = {
    "register_artifact": "artifact_storage",
    "save_thread": "thread_storage",
    "put_memory": "memory_storage",
}


class NodePassport(BaseModel):
    """``event_data`` of ``evt.node.registered``: who this node is and how to reach it."""

    node_id: str
    node_name: str
    node_type: str
    version: str
    capabilities: list[str]
    actions: list[str]
    exchange: str
    queue: str
    """The shared command queue (``cmd.storage.any``)."""
    node_queue: str
    """This node's own command queue (``cmd.storage.<node>``)."""
    routing_keys: list[str]
    dead_letter_queue: str
    max_priority: int
    """The highest message priority the command queues honour: 255 on classic queues, 0 on quorum ones."""
    max_message_bytes: int
    max_concurrent_tasks: int
    heartbeat_interval_seconds: float
    host: str
    pid: int
    started_at: datetime


class NodeLoad(BaseModel):
    """``event_data`` of ``evt.node.heartbeat``: tasks in flight now and since start."""

    node_id: str
    node_type: str
    version: str
    status: Literal["ready", "paused", "stopping"]
    """``paused``: a CONTROL ``pause`` signal stopped it taking commands until ``resume``."""
    current_tasks: int
    total_tasks: int
    failed_tasks: int
    max_concurrent_tasks: int
    uptime_seconds: float


class NodeDeregistration(NodeLoad):
    """``event_data`` of ``evt.node.deregistered``: the last figures and why the node left."""

    reason: str


def capabilities(actions: Iterable[str]) -> list[str]:
    """What this node can do, derived from the actions it actually serves (files come with artifacts)."""
    served = set(actions)
    caps = [cap for action, cap in _CAPABILITY_OF_ACTION.items() if action in served]
    if "artifact_storage" in caps:
        caps.insert(1, "file_storage")
    return caps


class NodeRegistry:
    """Publishes ``evt.node.registered`` / ``heartbeat`` / ``deregistered`` for one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.total_tasks = 0
        self.failed_tasks = 0
        self.started_at = utc_now()
        self._started_monotonic = time.monotonic()
        self._heartbeat: asyncio.Task[None] | None = None
        self._registered = False

    def attach(self) -> None:
        self.worker.on_consuming.append(self._on_consuming)
        self.worker.on_stopping.append(self._on_stopping)
        self.worker.on_outcome.append(self._count)

    def _count(self, outcome: Outcome, elapsed_s: float) -> None:
        self.total_tasks += 1
        if outcome.code != "OK":
            self.failed_tasks += 1

    def passport(self) -> NodePassport:
        """What a registry keeps about a participant."""
        s = self.settings
        return NodePassport(
            node_id=s.node_name,
            node_name=s.node_name,
            node_type=topology.NODE_TYPE,
            version=__version__,
            capabilities=capabilities(self.worker.actions),
            actions=sorted(self.worker.actions),
            exchange=s.exchange,
            queue=s.queue,
            node_queue=s.node_queue,
            routing_keys=list(s.routing_keys),
            dead_letter_queue=s.dlq,
            max_priority=topology.MAX_PRIORITY if s.queue_type == declared.CLASSIC else 0,
            max_message_bytes=s.max_message_bytes,
            max_concurrent_tasks=s.prefetch,
            heartbeat_interval_seconds=s.heartbeat_interval_s,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
        )

    def load(self) -> NodeLoad:
        return NodeLoad(
            node_id=self.settings.node_name,
            node_type=topology.NODE_TYPE,
            version=__version__,
            status="paused" if self.worker.paused else "ready",
            current_tasks=self.worker.in_flight,
            total_tasks=self.total_tasks,
            failed_tasks=self.failed_tasks,
            max_concurrent_tasks=self.settings.prefetch,
            uptime_seconds=round(time.monotonic() - self._started_monotonic, 3),
        )

    async def publish(self, event_type: str, event_data: BaseModel, priority: int) -> EventEnvelope:
        """One EVENT envelope on the main exchange, routed by its event type."""
        if not await self.worker.broker.ping(timeout=PING_TIMEOUT_S):  # no waiting out a dead broker on stop
            raise ConnectionError("not connected to the broker")
        data: dict[str, Any] = event_data.model_dump(mode="json")
        envelope = EventEnvelope(
            source=self.settings.node_name,
            subject=self.settings.node_name,
            data=EventData(event_type=event_type, event_data=data, tags=["node", topology.NODE_TYPE]),
        )
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            await self.worker.broker.publish(
                envelope.to_json_bytes(),
                exchange=declared.exchange(self.settings),
                routing_key=event_type,
                message_id=envelope.id,
                content_type="application/json",
                persist=True,
                priority=priority,
                mandatory=False,
            )
        return envelope

    async def _on_consuming(self, worker: Worker) -> None:
        self.started_at = utc_now()
        self._started_monotonic = time.monotonic()
        await self.publish(topology.EVT_NODE_REGISTERED, self.passport(), topology.PRIORITY_NODE_LIFECYCLE)
        self._registered = True
        log.info(
            "node %s registered on %s (heartbeat every %gs)",
            self.settings.node_name,
            self.settings.exchange,
            self.settings.heartbeat_interval_s,
        )
        self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat-{self.settings.node_name}")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self.publish(topology.EVT_NODE_HEARTBEAT, self.load(), topology.PRIORITY_HEARTBEAT)
            except Exception as exc:  # the broker may be away for a while; the next beat tries again
                log.warning("heartbeat not published: %s", exc or type(exc).__name__)

    async def _on_stopping(self, worker: Worker) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if not self._registered:
            return
        self._registered = False
        farewell = NodeDeregistration(**{**self.load().model_dump(), "status": "stopping", "reason": GRACEFUL_SHUTDOWN})
        try:
            await self.publish(topology.EVT_NODE_DEREGISTERED, farewell, topology.PRIORITY_NODE_LIFECYCLE)
            log.info("node %s deregistered (%s)", self.settings.node_name, GRACEFUL_SHUTDOWN)
        except Exception as exc:
            log.warning("deregistration not published: %s", exc or type(exc).__name__)
