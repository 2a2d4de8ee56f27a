"""The outbox publisher: every committed change goes out as an ``evt.storage.<kind>`` EVENT, at least once.

A write records its change in its own transaction (``store.changes``); this sends what its node's outbox
holds, in id (commit) order, after each group commit that recorded changes and at start (what a SIGKILL
left). Each change is one persistent EVENT on the main exchange, routed by ``evt.storage.<kind>``, whose
envelope id and AMQP ``message_id`` are the change id: a subscriber drops an id it has seen. A batch is
published on a channel with publisher confirms, and its outbox rows are deleted only once the broker
confirmed them; a crash in between publishes them again on the next start (a duplicate, never a loss).

The broker away: the rows stay, and the publisher tries again with a growing pause (``BACKOFF_S``). It
never holds up a command: commands commit and answer whatever the publisher is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractExchange
from prometheus_client import CollectorRegistry, Counter, Gauge

from contracts import Change, ChangeKind, EventData, EventEnvelope, topology
from service.core.context import Services
from service.store import changes as store
from service.transport import topology as declared

if TYPE_CHECKING:
    from service.transport.worker import Worker

log = logging.getLogger(__name__)

BATCH = 500
"""Changes read and published together: their confirms are awaited together (a window, not one by one)."""
PUBLISH_TIMEOUT_S = 10.0
BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
"""Pauses between attempts while the broker (or the database) fails; the last one repeats. An attempt costs a
read of the outbox and a publish that fails at once: retrying often ends an outage's delay soon after it."""
WARN_EVERY = 12
"""Failed attempts per WARNING while the failure lasts (the first one, then about once a minute)."""
FINAL_FLUSH_S = 5.0
"""On a graceful stop, how long the last publish may take: what is left waits for the next start."""
_TAGS = {
    ChangeKind.ARTIFACT_REGISTERED: "artifact",
    ChangeKind.ARTIFACT_DELETED: "artifact",
    ChangeKind.THREAD_SAVED: "thread",
    ChangeKind.THREAD_DELETED: "thread",
    ChangeKind.MEMORY_PUT: "memory",
    ChangeKind.MEMORY_DELETED: "memory",
    ChangeKind.QUOTA_WARNING: "quota",
}


def envelope_of(change: Change) -> EventEnvelope:
    """The EVENT of one change: its id is the change id, ``subject`` the object it is about."""
    return EventEnvelope(
        id=change.event_id,
        source=change.node,
        subject=subject_of(change),
        time=change.occurred_at,
        data=EventData(
            event_type=change.kind.routing_key,
            event_data=change.model_dump(mode="json", exclude_none=True),
            severity="WARNING" if change.kind is ChangeKind.QUOTA_WARNING else "INFO",
            tags=[topology.NODE_TYPE, _TAGS[change.kind]],
        ),
    )


def subject_of(change: Change) -> str | None:
    """The artifact or thread id; a memory item's namespace path and key; a quota warning's trace."""
    if change.artifact_id is not None:
        return change.artifact_id
    if change.thread_id is not None:
        return change.thread_id
    if change.namespace is not None and change.key is not None:
        return "/".join(change.namespace) + "/" + change.key
    return change.trace_id


class OutboxPublisher:
    """Publishes one worker's outbox; ``published`` and ``pending`` are its figures (metrics, tests)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.published = 0
        """Events the broker confirmed since start."""
        self.pending = 0
        """Changes waiting in this node's outbox as last seen (at least this many when a full batch was read)."""
        self._wake = asyncio.Event()
        self._seen = -1
        self._task: asyncio.Task[None] | None = None
        self._exchange: AbstractExchange | None = None
        self._published_counter: Counter | None = None

    def attach(self) -> None:
        self.worker.on_consuming.append(self._start)
        self.worker.on_stopping.append(self._stop)
        self.worker.on_batch.append(self._committed)

    def expose(self, registry: CollectorRegistry) -> None:
        """Its figures as metrics, on the worker's registry (``service.ops.metrics``)."""
        pending = Gauge(
            "storage_outbox_pending", "Changes committed and not yet confirmed by the broker", registry=registry
        )
        pending.set_function(lambda: self.pending)
        self._published_counter = Counter(
            "storage_events_published", "Change events (evt.storage.*) the broker confirmed", registry=registry
        )

    def _committed(self, size: int) -> None:
        """A ``Worker.on_batch`` observer: wake up when a committed group recorded changes."""
        services = self.worker.services
        if services is not None and services.writer.changes_committed != self._seen:
            self._wake.set()

    async def _start(self, worker: Worker) -> None:
        self._wake.set()  # whatever the last life of this node left unpublished
        self._task = asyncio.create_task(self._run(), name=f"outbox-{worker.settings.node_name}")

    async def _stop(self, worker: Worker) -> None:
        """After the last command settled: stop the loop, then one last publish, bounded in time."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(FINAL_FLUSH_S):
                while await self.publish_batch():
                    pass
        except Exception as exc:  # the next start publishes what is left
            log.warning("outbox not emptied on stop (%d waiting): %s", self.pending, exc or type(exc).__name__)

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self.publish_batch():
                    pass
            except Exception as exc:
                pause = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.log(
                    logging.WARNING if failures % WARN_EVERY == 1 else logging.DEBUG,
                    "change events not published (%d waiting, attempt %d), retrying in %gs: %s",
                    self.pending,
                    failures,
                    pause,
                    exc or type(exc).__name__,
                )
                await asyncio.sleep(pause)
                self._wake.set()
            else:
                if failures:
                    log.info("change events published again after %d failed attempts", failures)
                failures = 0

    def _services(self) -> Services:
        services = self.worker.services
        assert services is not None, "the outbox is published once the worker has started"
        return services

    async def publish_batch(self) -> bool:
        """Publish the oldest waiting changes and forget those confirmed; True when more may wait."""
        services = self._services()
        self._seen = services.writer.changes_committed  # read before the outbox: a later commit wakes us again
        node = self.worker.settings.node_name
        async with services.read() as conn:
            rows = await store.waiting(conn, node, BATCH)
            self.pending = await store.count_waiting(conn, node) if len(rows) == BATCH else len(rows)
        if not rows:
            return False
        services.faults.hit("before_outbox_publish")
        await services.faults.stall("before_outbox_publish")
        confirmed = await self._publish([store.to_change(row) for row in rows])
        services.faults.hit("after_outbox_publish")
        if confirmed:
            await services.writer.submit(lambda conn: store.published(conn, confirmed))
            self.published += len(confirmed)
            self.pending -= len(confirmed)
            if self._published_counter is not None:
                self._published_counter.inc(len(confirmed))
        if len(confirmed) < len(rows):
            raise ConnectionError(f"the broker confirmed {len(confirmed)} of {len(rows)} events")
        return len(rows) == BATCH

    async def _publish(self, batch: list[Change]) -> list[int]:
        """Send the batch in order on one channel and wait for the broker's confirms together; the ids of the
        confirmed prefix. The sends start in order and queue on the channel's lock in that order (FIFO), so
        the broker routes them in commit order; a later event confirmed after a refused or lost one is sent
        again with it next time (order before economy: a duplicate, dropped by its id)."""
        exchange = await self._main_exchange()
        app_id = f"mindbus-storage/{self.worker.settings.node_name}"
        sends = [
            asyncio.ensure_future(exchange.publish(_message(change, app_id), change.kind.routing_key, mandatory=False))
            for change in batch
        ]
        done, late = await asyncio.wait(sends, timeout=PUBLISH_TIMEOUT_S)
        for send in late:
            send.cancel()
        confirmed = [send in done and not send.cancelled() and send.exception() is None for send in sends]
        if not all(confirmed):
            self._exchange = None  # the channel may be gone: declare the exchange again next time
        ids: list[int] = []
        for change, ok in zip(batch, confirmed, strict=True):
            if not ok:
                break
            ids.append(change.change_id)
        return ids

    async def _main_exchange(self) -> AbstractExchange:
        """The main exchange on the worker's channel, which must have publisher confirms (FastStream's default):
        without them a publish returns before the broker took the message, and the outbox row would go early."""
        if self._exchange is None:
            exchange = await self.worker.broker.declare_exchange(declared.exchange(self.worker.settings))
            if not getattr(exchange.channel, "publisher_confirms", False):
                raise RuntimeError("the worker's channel has no publisher confirms: change events stay in the outbox")
            self._exchange = exchange
        return self._exchange


def _message(change: Change, app_id: str) -> aio_pika.Message:
    envelope = envelope_of(change)
    return aio_pika.Message(
        envelope.to_json_bytes(),
        message_id=envelope.id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=topology.PRIORITY_STORAGE_EVENT,
        app_id=app_id,
    )
