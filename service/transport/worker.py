"""The worker: FastStream broker and subscriber, topology, the single writer, start and graceful stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage
from pamqp.commands import Basic

from contracts import topology as names
from service import maintenance
from service.core.context import Services
from service.core.pipeline import Delivery, Outcome, Pipeline, Settle
from service.files import FileStore
from service.ops import operating
from service.settings import Settings
from service.store.engine.db import create_engine, is_sqlite, sqlite_path
from service.store.engine.lock import DatabaseLock
from service.store.engine.lookups import PointLookups
from service.store.engine.schema import prepare
from service.store.engine.writer import SingleWriter
from service.transport import amqp_decoding, topology
from service.transport.acks import BulkAcks

log = logging.getLogger(__name__)

StartHook = Callable[["Worker"], Awaitable[None]]


class _Settler(Protocol):
    """FastStream's ``RabbitMessage`` or aio-pika's message: whichever consumed the delivery settles it."""

    async def ack(self) -> None: ...

    async def reject(self, requeue: bool = False) -> None: ...


class _BulkSettler:
    """Settles one delivery of the direct consumer through the worker's ``BulkAcks``."""

    __slots__ = ("_acks", "_message")

    def __init__(self, acks: BulkAcks, message: AbstractIncomingMessage) -> None:
        self._acks = acks
        self._message = message

    async def ack(self) -> None:
        await self._acks.ack(self._message)

    async def reject(self, requeue: bool = False) -> None:
        assert not requeue, "the pipeline never requeues"
        await self._acks.reject(self._message)


async def _undecoded(message: RabbitMessage) -> RabbitMessage:
    """Hand the message over undecoded: the pipeline parses the body, and must see non-JSON bodies to refuse them.

    FastStream's own decoder would parse JSON first and fail on garbage before the handler runs, leaving
    the message neither answered nor dead-lettered. With ``apply_types=False`` the handler gets what this
    returns: no dependency injection per message (resolving a ``RabbitMessage`` parameter costs a thread
    pool round trip on every delivery). It is a coroutine because FastStream runs a plain function in a
    worker thread, another round trip per message.
    """
    return message


class Worker:
    """One storage node. ``start()`` returns once it consumes; ``stop()`` drains in-flight commands first."""

    def __init__(self, settings: Settings | None = None) -> None:
        amqp_decoding.install()  # before any connection: no property an agent sends can kill it
        self.settings = settings or Settings()
        s = self.settings
        self.broker = RabbitBroker(
            s.amqp_url,
            default_channel=Channel(prefetch_count=s.prefetch),
            graceful_timeout=s.shutdown_grace_s,
            logger=None,
            app_id=f"mindbus-storage/{s.node_name}",
            apply_types=False,
        )
        self.subscriber = self.broker.subscriber(
            topology.command_queue(s),
            topology.exchange(s),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=_undecoded,
            title="storage commands",
        )
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        """The direct consumer's, when the worker consumes without FastStream's per-message machinery."""
        self._acks = BulkAcks()
        """The direct consumer's acks, sent in bulk (FastStream's path acks each message itself)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock: DatabaseLock | None = None
        self.services: Services | None = None
        self.pipeline: Pipeline | None = None
        self.on_started: list[StartHook] = []
        """Run before the broker connects (the stores are ready)."""
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
        self._app_id = f"mindbus-storage/{s.node_name}"
        self.operations = operating.install(self)
        """Command log, metrics, node registry and tracing, as the settings ask."""
        self.maintenance = maintenance.install(self)
        """Startup recovery before the broker connects, then a cleanup every STORAGE_CLEANUP_INTERVAL."""

    async def start(self) -> None:
        s = self.settings
        if (db_file := sqlite_path(s.database_url)) is not None:
            self._lock = DatabaseLock(db_file)
            self._lock.acquire()
        engine = create_engine(s.database_url, read_timeout_ms=s.read_timeout_ms)
        try:  # a new embedded SQLite database gets its schema; anything else migrates only when asked to
            await prepare(engine, migrate_on_start=s.migrate_on_start, create_if_empty=is_sqlite(s.database_url))
        except BaseException:
            await engine.dispose()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            raise
        files = FileStore(s.storage_root)
        await asyncio.to_thread(files.ensure_layout)
        writer = SingleWriter(
            engine,
            batch_max=s.write_batch_max,
            on_batch=self._batch_committed,
            gather_s=s.write_gather_ms / 1000,
            busy=lambda: self.in_flight,
        )
        await writer.start()
        lookups = PointLookups(engine)
        await lookups.start()
        self.services = Services(settings=s, engine=engine, writer=writer, files=files, lookups=lookups)
        self.pipeline = Pipeline(self.services)
        for hook in self.on_started:
            await hook(self)
        traced = bool(self.broker.middlewares)
        if traced and not self.subscriber.calls:
            self.subscriber(self._on_message)
        await self.broker.connect()
        await topology.declare(self.broker, s)
        await self.broker.start()
        if not traced:
            await self._consume_directly()
        for hook in self.on_consuming:
            await hook(self)
        log.info("storage worker %s consuming %s on %s", s.node_name, s.queue, s.exchange)

    async def stop(self) -> None:
        """Stop taking messages, finish in-flight ones (up to the shutdown grace), then close the stores."""
        await self._cancel_consumer()  # first: every moment before it, a fast worker takes more commands
        for hook in self.on_stopping:
            await hook(self)
        await self.broker.stop()
        if self._executing:  # orphaned by a lost connection: let them reach their end before the stores close
            await asyncio.wait(self._executing, timeout=self.settings.shutdown_grace_s)
        if self.services is not None:
            await self.services.writer.stop()
            if self.services.lookups is not None:
                await self.services.lookups.close()
            await self.services.engine.dispose()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        log.info("storage worker %s stopped", self.settings.node_name)

    async def _cancel_consumer(self) -> None:
        """Tell the broker to stop delivering before waiting for the in-flight commands.

        FastStream's own stop waits for in-flight handlers first and cancels the consumer after, dropping
        whatever the broker delivers meanwhile: those messages would stay unacked until the connection
        closes and come back redelivered. After cancel-ok nothing more arrives, and the deliveries that
        came before it are handed to their tasks within a loop turn, so the broker's wait covers them.
        """
        direct = self._consumer_tag is not None
        queue = self._queue if direct else getattr(self.subscriber, "_queue_obj", None)
        tag = self._consumer_tag if direct else getattr(self.subscriber, "_consumer_tag", None)
        self._consumer_tag = None
        if queue is None or tag is None or queue.channel.is_closed:
            return
        try:
            await queue.cancel(tag)
        except Exception as exc:  # the channel is going away anyway; the broker's stop closes it
            log.warning("cancelling the consumer failed: %s", exc)
            return
        for _ in range(3):  # aiormq's delivery task, then aio-pika's callback task, then its first step
            await asyncio.sleep(0)
        if direct:  # FastStream's stop waits for its own handlers only: wait for the direct consumer's here
            try:
                await asyncio.wait_for(self._idle.wait(), self.settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("%d commands still running after the shutdown grace", self.in_flight)

    async def _consume_directly(self) -> None:
        """Consume the command queue with aio-pika itself, on the broker's channel and prefetch.

        FastStream's per-message path (context scopes, middleware stack, parser, call wrappers) costs about
        as much as the broker round trip itself; without middlewares to run there is nothing it adds here.
        With tracing installed the worker consumes through FastStream instead, so the middlewares see every
        delivery. Either way the same ``_handle`` serves the command.
        """
        self._queue = await self.broker.declare_queue(topology.command_queue(self.settings))
        self._consumer_tag = await self._queue.consume(self._on_delivery)

    async def _on_delivery(self, raw: AbstractIncomingMessage) -> None:
        self.in_flight += 1
        self._idle.clear()
        self._acks.taken(raw)
        try:
            await self._handle(raw, _BulkSettler(self._acks, raw))
        except Exception:  # only the ack itself failed (the channel is gone): the broker redelivers it
            log.exception("command %s could not be settled", raw.message_id or raw.correlation_id)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    def _batch_committed(self, size: int) -> None:
        for observer in self.on_batch:
            observer(size)

    async def _on_message(self, message: RabbitMessage) -> None:
        self.in_flight += 1
        try:
            await self._handle(message.raw_message, message)
        finally:
            self.in_flight -= 1

    async def _handle(self, raw: AbstractIncomingMessage, settler: _Settler) -> None:
        """One command: pipeline, reply, then ack (or reject) through ``settler``: the message as consumed.

        Every delivery settles: the pipeline answers an unexpected failure INTERNAL instead of raising, and a
        reply that cannot be published is replaced by an INTERNAL one (``_reply_or_internal``). Only a
        failing ack (the channel is gone) leaves the message to the broker, which then redelivers it.
        """
        assert self.pipeline is not None
        try:
            expiration = raw.expiration
            delivery = Delivery(
                body=raw.body,
                reply_to=raw.reply_to,
                correlation_id=raw.correlation_id,
                user_id=raw.user_id,
                expiration_ms=expiration * 1000 if expiration is not None else None,
                timestamp=_aware(raw.timestamp),
            )
        except Exception:  # properties aio-pika could not turn into values: the body alone is what we know
            log.exception("command %s has unreadable AMQP properties", raw.message_id or raw.correlation_id)
            delivery = Delivery(body=raw.body, reply_to=raw.reply_to, correlation_id=raw.correlation_id)
        started = asyncio.get_running_loop().time()
        # When the connection drops, aiormq cancels the delivery's task. A command past its commit must still
        # finish what follows the commit (the file move, the inbox record), so it runs in its own task; only
        # the reply and the ack are lost with the connection, and the redelivered copy gets the stored reply.
        execution = asyncio.ensure_future(self.pipeline.process(delivery))
        self._executing.add(execution)
        execution.add_done_callback(self._executing.discard)
        outcome = await asyncio.shield(execution)
        if outcome.reply is not None and outcome.reply_to:
            outcome = await self._reply_or_internal(raw, delivery, outcome)
            self.pipeline.services.faults.hit("after_reply")
        if outcome.settle is Settle.REJECT:
            await settler.reject(requeue=False)
        else:
            await settler.ack()
        elapsed = asyncio.get_running_loop().time() - started
        for observer in self.on_outcome:
            observer(outcome, elapsed)

    async def _reply_or_internal(self, raw: AbstractIncomingMessage, delivery: Delivery, outcome: Outcome) -> Outcome:
        """Publish the reply; if that fails while the channel lives on, publish an INTERNAL one in its place.

        A closed channel is let through: nothing can be published or acked on it, and the broker redelivers.
        """
        try:
            await self._reply(raw, outcome)
            return outcome
        except Exception:
            if raw.channel.is_closed:
                raise
            log.exception("the reply to command %s could not be published", outcome.envelope_id)
        assert self.pipeline is not None
        crashed = self.pipeline.crashed(delivery, time.monotonic())
        fallback = replace(outcome, reply=crashed.reply, reply_id=crashed.reply_id, code=crashed.code)
        if fallback.reply is not None:
            try:
                await self._reply(raw, fallback)
            except Exception:
                if raw.channel.is_closed:
                    raise
                log.exception("not even an INTERNAL reply to command %s could be published", outcome.envelope_id)
        return fallback

    async def _reply(self, raw: AbstractIncomingMessage, outcome: Outcome) -> None:
        """Publish the reply and wait for the broker's confirm: it is durable before the command is acked.

        Straight onto the consuming channel (publisher confirms on) with the AMQP properties of
        docs/contract.md §1; FastStream's publish path (command objects, middleware chain) is kept for when
        middlewares are installed, so tracing still gets its producer span and ``traceparent`` header.
        """
        assert outcome.reply is not None and outcome.reply_to is not None
        if self.broker.middlewares:
            await self.broker.publish(
                outcome.reply,
                exchange="",
                routing_key=outcome.reply_to,
                correlation_id=outcome.correlation_id,
                message_id=outcome.reply_id,
                content_type="application/json",
                persist=True,
                priority=names.PRIORITY_REPLY,
                mandatory=False,
            )
            return
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            priority=names.PRIORITY_REPLY,
            correlation_id=outcome.correlation_id,
            message_id=outcome.reply_id,
            app_id=self._app_id,
        )
        # wait=False: the channel's lock is not held until the writer task has sent the frame (aiormq's default
        # serialises every publish of the channel behind the previous one's socket write); the broker's confirm,
        # awaited here all the same, is what tells the reply is safe.
        await raw.channel.basic_publish(
            outcome.reply, exchange="", routing_key=outcome.reply_to, properties=properties, mandatory=False, wait=False
        )


def _aware(moment: datetime | None) -> datetime | None:
    """The AMQP ``timestamp`` as an aware UTC time (pamqp decodes it aware; be sure of it)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
