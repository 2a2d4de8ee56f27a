"""Request/reply over RabbitMQ: the one boundary where aio-pika failures become ``StorageError``s.

The client owns a named, exclusive reply queue (a robust connection re-declares it after a reconnect).
Every publish gets a fresh correlation id; a reply whose id no call is waiting for (it came after that
call gave up, or it is not ours) is dropped and counted, never handed to another call. Publishing uses
publisher confirms and ``mandatory``, so a command the broker cannot route fails at once instead of
waiting out its timeout. The same queue is bound to the worker's lifecycle events, which tell the client
when a storage node (re)appears.

With ``user_id`` every command carries the AMQP ``user_id`` property. RabbitMQ checks it against the
connection's user (a mismatch closes the channel with PRECONDITION_FAILED), which is what makes it the one
identity the worker trusts for admin rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.connection import make_url
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from pydantic import ValidationError

from buffer.errors import BrokerUnavailable, CallTimeout, Unroutable
from buffer.live import Subscription, open_subscription
from contracts import (
    ERROR_TYPE,
    RESULT_TYPE,
    CommandEnvelope,
    ControlEnvelope,
    ErrorEnvelope,
    InternalError,
    ResultEnvelope,
    topology,
)
from contracts.control import PRIORITY_CONTROL

log = logging.getLogger(__name__)

Reply = ResultEnvelope | ErrorEnvelope
EventListener = Callable[[str], None]
WORKER_EVENTS = (topology.EVT_NODE_REGISTERED, topology.EVT_NODE_HEARTBEAT)


class RpcTransport:
    """One connection, one channel, one reply queue; any number of calls in flight."""

    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        *,
        connect_timeout_s: float = 5.0,
        reconnect_interval_s: float = 1.0,
        on_event: EventListener | None = None,
        user_id: str | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.user_id = user_id
        """Sent as the AMQP ``user_id`` of every command (None: not sent)."""
        self.exchange_name = exchange
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        self.on_event = on_event
        self.reply_queue = f"storage.reply.{uuid.uuid4().hex}"
        self.late_replies = 0
        """Replies that matched no waiting call (late or foreign): dropped."""
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._subscriptions: set[Subscription] = set()
        self._connect_lock = asyncio.Lock()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- connection ----------------------------------------------------------------------------

    async def _ensure(self) -> AbstractExchange:
        if self._exchange is not None and self._conn is not None and not self._conn.is_closed:
            return self._exchange
        async with self._connect_lock:
            if self._closed:
                raise BrokerUnavailable("the client is closed")
            if self._exchange is not None and self._conn is not None and not self._conn.is_closed:
                return self._exchange
            conn = aio_pika.RobustConnection(
                make_url(self.amqp_url),
                reconnect_interval=self.reconnect_interval_s,
                client_properties={"connection_name": f"mindbus-storage-client {self.reply_queue}"},
            )
            try:
                await conn.connect(timeout=self.connect_timeout_s)
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                # Closed here, in the loop: left to the garbage collector, a collection in one of the client's
                # worker threads would create its close() coroutine where no loop runs (a "never awaited" warning).
                with contextlib.suppress(Exception):
                    await conn.close()
                raise BrokerUnavailable(
                    f"cannot connect to the broker: {exc or type(exc).__name__}", {"error": type(exc).__name__}
                ) from exc
            try:
                await self._declare(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
            conn.close_callbacks.add(self._on_connection_lost)
            assert self._exchange is not None
            return self._exchange

    async def _declare(self, conn: AbstractRobustConnection) -> None:
        try:
            channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(self.reply_queue, exclusive=True, auto_delete=True)
            for key in WORKER_EVENTS:
                await queue.bind(exchange, routing_key=key)
            await queue.consume(self._on_message, no_ack=True)
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot set up the reply queue: {exc}", {"error": type(exc).__name__}) from exc
        self._channel, self._exchange, self._queue = channel, exchange, queue

    def _on_connection_lost(self, *_: Any) -> None:
        """Calls waiting on a dead connection would only time out: fail them now, they are retried."""
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(BrokerUnavailable("connection to the broker lost while waiting for a reply"))

    async def close(self) -> None:
        self._closed = True
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(BrokerUnavailable("the client is closed"))
        for subscription in list(self._subscriptions):  # their readers stop instead of waiting forever
            await subscription.close()
        if self._conn is not None:
            self._conn.close_callbacks.discard(self._on_connection_lost)
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await self._conn.close()
        self._conn = self._channel = self._exchange = self._queue = None

    async def subscribe(self, routing_keys: Sequence[str]) -> Subscription:
        """A private queue for these routing keys on this connection (its own channel), bound on return."""
        await self._ensure()
        assert self._conn is not None
        subscription = await open_subscription(self._conn, self.exchange_name, routing_keys)
        self._subscriptions.add(subscription)

        async def forget() -> None:
            self._subscriptions.discard(subscription)

        subscription.on_close(forget)
        return subscription

    # -- calls ---------------------------------------------------------------------------------

    async def send_signal(self, envelope: ControlEnvelope, routing_key: str) -> None:
        """Publish a CONTROL signal as this connection's broker user, confirmed; nothing comes back."""
        exchange = await self._ensure()
        message = aio_pika.Message(
            envelope.to_json_bytes(),
            content_type="application/json",
            message_id=envelope.id,
            type=envelope.type,
            priority=PRIORITY_CONTROL,
            user_id=topology.broker_user(self.amqp_url),
        )
        try:
            await exchange.publish(message, routing_key=routing_key)
        except (DeliveryError, *CONNECTION_EXCEPTIONS) as exc:
            raise BrokerUnavailable(
                f"the broker did not take the signal: {exc or type(exc).__name__}", {"routing_key": routing_key}
            ) from exc

    async def call(
        self, envelope: CommandEnvelope, *, routing_key: str, timeout_s: float, expire: bool = True
    ) -> Reply:
        """Publish one command and wait for its reply; ``expire`` sets the AMQP expiration to the timeout."""
        action = envelope.data.action
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                exchange = await self._ensure()
                self._pending[correlation_id] = future
                await self._publish(exchange, envelope, correlation_id, routing_key, timeout_s if expire else None)
                return await future
        except TimeoutError:
            raise CallTimeout(action, timeout_s, {"envelope_id": envelope.id}) from None
        finally:
            self._pending.pop(correlation_id, None)
            if not future.done():
                future.cancel()

    async def _publish(
        self,
        exchange: AbstractExchange,
        envelope: CommandEnvelope,
        correlation_id: str,
        routing_key: str,
        expiration_s: float | None,
    ) -> None:
        message = aio_pika.Message(
            envelope.to_json_bytes(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=envelope.id,
            correlation_id=correlation_id,
            reply_to=self.reply_queue,
            expiration=expiration_s,
            type=envelope.type,
            user_id=self.user_id,
        )
        try:
            await exchange.publish(message, routing_key=routing_key, mandatory=True)
        except PublishError:
            raise Unroutable(envelope.data.action, self.exchange_name, routing_key) from None
        except DeliveryError as exc:
            raise BrokerUnavailable("the broker refused the command (nack)", {"routing_key": routing_key}) from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(
                f"publishing failed: {exc or type(exc).__name__}", {"error": type(exc).__name__}
            ) from exc

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.exchange == self.exchange_name:
            if self.on_event is not None and message.routing_key:
                self.on_event(message.routing_key)
            return
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            self.late_replies += 1
            log.debug("dropped a reply nobody waits for (correlation id %s)", message.correlation_id)
            return
        try:
            future.set_result(_parse_reply(message.body))
        except InternalError as exc:
            future.set_exception(exc)


def _parse_reply(body: bytes) -> Reply:
    try:
        kind = json.loads(body).get("type")
        if kind == RESULT_TYPE:
            return ResultEnvelope.model_validate_json(body)
        if kind == ERROR_TYPE:
            return ErrorEnvelope.model_validate_json(body)
    except (ValueError, AttributeError, ValidationError) as exc:
        raise InternalError("the worker's reply is not a valid RESULT or ERROR", {"error": str(exc)[:500]}) from None
    raise InternalError("the worker's reply is neither RESULT nor ERROR", {"type": kind})
