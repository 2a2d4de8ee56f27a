"""Storage events (``evt.storage.*``) on the main exchange: what a command's commit tells the bus.

Handlers know nothing of AMQP: they hand an event to ``Services.events`` after their commit, and this
publishes it as a CloudEvents EVENT envelope, routed by its event type. An event that cannot be published
(the broker away) is logged, never raised: the commit it reports stands.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from contracts import EventData, EventEnvelope, topology
from service.transport import topology as declared

if TYPE_CHECKING:
    from service.transport.worker import Worker

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0


class StorageEvents:
    """The ``Services.events`` sink of one worker, set once its stores are open."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def attach(self) -> None:
        self.worker.on_started.append(self._on_started)

    async def _on_started(self, worker: Worker) -> None:
        assert worker.services is not None, "services are open once the worker has started"
        worker.services.events = self.publish

    async def publish(self, event: EventData, *, subject: str) -> None:
        settings = self.worker.settings
        envelope = EventEnvelope(source=settings.node_name, subject=subject, data=event)
        event_type = event.event_type
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.worker.broker.publish(
                    envelope.to_json_bytes(),
                    exchange=declared.exchange(settings),
                    routing_key=event_type,
                    message_id=envelope.id,
                    content_type="application/json",
                    persist=True,
                    priority=topology.PRIORITY_STORAGE_EVENT,
                    mandatory=False,
                )
        except Exception as exc:  # the commit stands; the event is lost, and the log says so
            log.warning("event %s (%s) not published: %s", event_type, subject, exc or type(exc).__name__)
