"""The worker's transport: consumers of the shared and the node's command queue, the reply publish, settling,
start, pause and graceful stop.

One delivery path: an aio-pika consumer on the FastStream broker's connection and channel. FastStream's
per-message path (context scopes, middleware stack, parser, call wrappers) cost about as much as the broker
round trip itself, and the worker needs none of it; tracing hooks in through ``DeliveryTracer`` instead.
The parts are handed in by ``service.bootstrap``: the action table and how to open and close the stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol, cast

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from faststream.rabbit import Channel, RabbitBroker

from service.core.actions import ActionTable
from service.core.context import Services
from service.core.pipeline import Delivery, Outcome, Pipeline, Settle
from service.settings import Settings
from service.transport import amqp_decoding, topology
from service.transport.acks import BulkAcks
from service.transport.publishing import publish_reply

log = logging.getLogger(__name__)

StartHook = Callable[["Worker"], Awaitable[None]]
OpenServices = Callable[[Settings, Callable[[int], None], Callable[[], int]], Awaitable[Services]]
"""``(settings, on_batch, busy)`` → the opened stores; ``on_batch`` hears each group commit, ``busy`` is in-flight."""

DELIVERY_QUIET_S = 0.05
"""After cancel-ok, how long no new delivery may reach the worker before the consumer counts as drained."""


class DeliveryTracer(Protocol):
    """Spans around one delivery and around its reply's publish (``service.ops.telemetry``)."""

    def consuming(self, message: AbstractIncomingMessage) -> AbstractContextManager[object]: ...

    def publishing(self, routing_key: str, headers: dict[str, str]) -> AbstractContextManager[object]:
        """Open the producer span and write its trace context into ``headers``."""
        ...


class Worker:
    """One storage node. ``start()`` returns once it consumes; ``stop()`` drains in-flight commands first."""

    def __init__(
        self,
        settings: Settings,
        actions: ActionTable,
        *,
        open_services: OpenServices,
        close_services: Callable[[Services], Awaitable[None]],
    ) -> None:
        amqp_decoding.install()  # before any connection: no property an agent sends can kill it
        self.settings = s = settings
        self.actions = actions
        self._open_services = open_services
        self._close_services = close_services
        self.broker = RabbitBroker(
            s.amqp_url,
            default_channel=Channel(prefetch_count=s.prefetch),
            graceful_timeout=s.shutdown_grace_s,
            logger=None,
            app_id=f"mindbus-storage/{s.node_name}",
            apply_types=False,
        )
        self._app_id = f"mindbus-storage/{s.node_name}"
        self._consumers: list[tuple[AbstractQueue, str]] = []
        """The command queues consumed now, with their consumer tags (none while paused or stopped)."""
        self.paused = False
        """Paused by a CONTROL signal: consuming nothing until resumed (heartbeats and /healthz say so)."""
        self.stop_requested = asyncio.Event()
        """Set to ask the process running this worker for a graceful stop, as SIGTERM does."""
        self._acks = BulkAcks()
        self._idle = asyncio.Event()
        self._idle.set()
        self._taken = 0
        """Deliveries ever taken: how ``stop`` tells that no more are arriving."""
        self.services: Services | None = None
        self.pipeline: Pipeline | None = None
        self.tracer: DeliveryTracer | None = None
        self.on_started: list[StartHook] = []
        """Run before the broker connects (the stores are ready)."""
        self.on_connected: list[StartHook] = []
        """Run once the broker is connected and the topology declared, before any command is taken."""
        self.on_consuming: list[StartHook] = []
        """Run once the broker consumes: what needs the bus, such as announcing the node."""
        self.on_stopping: list[StartHook] = []
        self.on_outcome: list[Callable[[Outcome, float], None]] = []
        self.on_batch: list[Callable[[int], None]] = []
        """Told the size of every committed group of writes."""
        self.in_flight = 0
        """Commands taken from the queue and not yet settled."""
        self._executing: set[asyncio.Task[Outcome]] = set()
        """Commands whose pipeline runs on even if their delivery dies (see ``_handle``)."""

    async def start(self) -> None:
        s = self.settings
        self.services = await self._open_services(s, self._batch_committed, lambda: self.in_flight)
        self.pipeline = Pipeline(self.services, self.actions)
        for hook in self.on_started:
            await hook(self)
        await self.broker.connect()
        await topology.declare(self.broker, s)
        await self.broker.start()
        for hook in self.on_connected:
            await hook(self)
        # Said before the first delivery can arrive: a command that kills the worker (a fault test) cannot
        # come before the line that tells the worker is up.
        log.info("storage worker %s consuming %s and %s on %s", s.node_name, s.queue, s.node_queue, s.exchange)
        await self._consume()
        for hook in self.on_consuming:
            await hook(self)

    async def _consume(self) -> None:
        for declared in (topology.command_queue(self.settings), topology.node_queue(self.settings)):
            queue = await self.broker.declare_queue(declared)
            self._consumers.append((queue, await queue.consume(self._on_delivery)))

    async def pause(self) -> bool:
        """Stop taking commands; the ones in flight finish (within the shutdown grace). False if already paused."""
        if self.paused or not self._consumers:
            return False
        self.paused = True
        await self._cancel_consumer()
        log.info("storage worker %s paused: taking no commands", self.settings.node_name)
        return True

    async def resume(self) -> bool:
        """Take commands again after ``pause``. False if not paused."""
        if not self.paused:
            return False
        await self._consume()
        self.paused = False
        log.info("storage worker %s resumed", self.settings.node_name)
        return True

    async def stop(self) -> None:
        """Stop taking messages, finish in-flight ones (up to the shutdown grace), then close the stores."""
        await self._cancel_consumer()  # first: every moment before it, a fast worker takes more commands
        for hook in self.on_stopping:
            await hook(self)
        await self.broker.stop()
        if self._executing:  # orphaned by a lost connection: let them reach their end before the stores close
            await asyncio.wait(self._executing, timeout=self.settings.shutdown_grace_s)
        if self.services is not None:
            await self._close_services(self.services)
        log.info("storage worker %s stopped", self.settings.node_name)

    async def _cancel_consumer(self) -> None:
        """Tell the broker to stop delivering from every queue, then wait until each delivery it sent has settled.

        Deliveries the broker sent before cancel-ok still reach the consumer after it; the worker waits
        until none has arrived for ``DELIVERY_QUIET_S`` and none is running, within the shutdown grace.
        Settled here, none comes back redelivered when the connection closes.
        """
        consumers, self._consumers = self._consumers, []
        live = [(queue, tag) for queue, tag in consumers if not queue.channel.is_closed]
        if not live:
            return
        try:
            for queue, tag in live:
                await queue.cancel(tag)
        except Exception as exc:  # the channel is going away anyway; the broker's stop closes it
            log.warning("cancelling the consumer failed: %s", exc)
            return
        try:
            await asyncio.wait_for(self._drained(), self.settings.shutdown_grace_s)
        except TimeoutError:
            log.warning("%d commands still running after the shutdown grace", self.in_flight)

    async def _drained(self) -> None:
        while True:
            taken = self._taken
            await asyncio.sleep(DELIVERY_QUIET_S)
            await self._idle.wait()
            if self._taken == taken:
                return

    async def _on_delivery(self, raw: AbstractIncomingMessage) -> None:
        self.in_flight += 1
        self._taken += 1
        self._idle.clear()
        self._acks.taken(raw)
        try:
            if self.tracer is None:
                await self._handle(raw)
            else:
                with self.tracer.consuming(raw):
                    await self._handle(raw)
        except Exception:  # only the ack itself failed (the channel is gone): the broker redelivers it
            log.exception("command %s could not be settled", raw.message_id or raw.correlation_id)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    def _batch_committed(self, size: int) -> None:
        for observer in self.on_batch:
            observer(size)

    async def _handle(self, raw: AbstractIncomingMessage) -> None:
        """One command: pipeline, reply, then ack (or reject into the dead-letter queue).

        Every delivery settles: the pipeline answers an unexpected failure INTERNAL instead of raising, and a
        reply that cannot be published is replaced by an INTERNAL one (``_reply_or_internal``). Only a
        failing ack (the channel is gone) leaves the message to the broker, which then redelivers it.
        """
        assert self.pipeline is not None
        delivery = _delivery_of(raw)
        started = asyncio.get_running_loop().time()
        # When the connection drops, aiormq cancels the delivery's task. A command past its commit must still
        # finish what follows the commit (the file move, the inbox record), so it runs in its own task; only
        # the reply and the ack are lost with the connection, and the redelivered copy gets the stored reply.
        execution = asyncio.ensure_future(self.pipeline.process(delivery))
        self._executing.add(execution)
        execution.add_done_callback(self._executing.discard)
        outcome = await asyncio.shield(execution)
        if outcome.body is not None and delivery.reply_to:
            outcome = await self._reply_or_internal(raw, delivery, outcome)
            self.pipeline.services.faults.hit("after_reply")
        if outcome.settle is Settle.REJECT:
            await self._acks.reject(raw)
        else:
            await self._acks.ack(raw)
        elapsed = asyncio.get_running_loop().time() - started
        for observer in self.on_outcome:
            observer(outcome, elapsed)

    async def _reply_or_internal(self, raw: AbstractIncomingMessage, delivery: Delivery, outcome: Outcome) -> Outcome:
        """Publish the reply; if that fails while the channel lives on, publish an INTERNAL one in its place.

        A closed channel is let through: nothing can be published or acked on it, and the broker redelivers.
        """
        try:
            await self._reply(raw, delivery, outcome)
            return outcome
        except Exception:
            if raw.channel.is_closed:
                raise
            log.exception("the reply to command %s could not be published", outcome.envelope_id)
        assert self.pipeline is not None
        crashed = self.pipeline.crashed(delivery, time.monotonic())
        fallback = replace(outcome, reply=crashed.reply, body=crashed.body)
        if fallback.body is not None:
            try:
                await self._reply(raw, delivery, fallback)
            except Exception:
                if raw.channel.is_closed:
                    raise
                log.exception("not even an INTERNAL reply to command %s could be published", outcome.envelope_id)
        return fallback

    async def _reply(self, raw: AbstractIncomingMessage, delivery: Delivery, outcome: Outcome) -> None:
        """Publish the reply and wait for the broker's confirm: it is durable before the command is acked.

        Straight onto the consuming channel, inside the tracer's producer span when tracing is on.
        """
        assert outcome.body is not None and outcome.reply is not None and delivery.reply_to is not None
        headers: dict[str, str] = {}
        span = self.tracer.publishing(delivery.reply_to, headers) if self.tracer else contextlib.nullcontext()
        with span:
            await publish_reply(
                raw,
                outcome.body,
                correlation_id=outcome.correlation_id,
                message_id=outcome.reply.reply_id,
                app_id=self._app_id,
                headers=dict(headers.items()),
            )


def _delivery_of(raw: AbstractIncomingMessage) -> Delivery:
    """What the pipeline needs of a message; properties aio-pika cannot turn into values read as absent."""
    try:
        # aio-pika types every message's expiration as any date type; a received one is decoded to seconds
        expiration = cast("float | None", raw.expiration)
        return Delivery(
            body=raw.body,
            reply_to=raw.reply_to,
            correlation_id=raw.correlation_id,
            user_id=raw.user_id,
            expiration_ms=expiration * 1000 if expiration is not None else None,
            timestamp=_aware(raw.timestamp),
        )
    except Exception:  # the body alone is what we know
        log.exception("command %s has unreadable AMQP properties", raw.message_id or raw.correlation_id)
        return Delivery(body=raw.body, reply_to=raw.reply_to, correlation_id=raw.correlation_id)


def _aware(moment: datetime | None) -> datetime | None:
    """The AMQP ``timestamp`` as an aware UTC time (pamqp decodes it aware; be sure of it)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
