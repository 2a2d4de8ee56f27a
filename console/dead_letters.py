"""The dead-letter queue over plain AMQP: peek without consuming, requeue or discard chosen messages (no HTTP).

Every call opens a fresh channel and takes messages with ``basic.get`` without acking them. Closing the
channel hands every unacked message back to RabbitMQ, which puts it back at its original place: a peek
consumes nothing and keeps the order, and an action settles only the messages it acked. A requeue publishes
a copy to the command exchange with publisher confirms and acks the dead letter only once the broker has
confirmed the copy: a failure in between leaves the dead letter where it was (at worst the command runs
twice, and the worker's inbox answers a write's second run from its record).

Identity: RabbitMQ accepts a ``user_id`` only when it names the publishing connection's user, and the worker
grants admin rights on that alone. A copy keeps its ``user_id`` only when it already is the console's broker
user; any other goes out without one (the worker then judges it by its body's identity, as any unvalidated
command). Republishing it as the console's own user would turn any agent's dead letter into an admin command.

One call at a time per console (a lock): a second peek during a requeue would see a list with holes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import AMQPError, DeliveryError, PublishError

from contracts import topology

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PREVIEW_BYTES = 4096
"""A body that is no JSON text shows as hex of its first 4 KiB."""
PREVIEW_CHARS = 16384
"""Pretty JSON beyond this many characters is cut."""
MAX_PARSE_BYTES = 1024 * 1024
"""Bodies larger than this are not parsed (the worker refuses them anyway): hex preview only."""
MAX_PEEK_BYTES = 32 * 1024 * 1024
"""A peek stops once it has read this many body bytes: a DLQ of huge messages must not exhaust the console."""
GET_TIMEOUT_S = 5.0
COMMAND_KEY_PREFIX = "cmd.storage."
DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
"""Headers the broker wrote while dead-lettering; a requeued copy starts without them."""
TEXT_CUT = 300

_LOCK = asyncio.Lock()


@dataclass(frozen=True, slots=True)
class Death:
    """One entry of the ``x-death`` header (the broker's record of a queue dead-lettering the message)."""

    reason: str | None
    count: int | None
    queue: str | None
    exchange: str | None
    time: datetime | None
    routing_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What the page shows of one dead letter; the body itself is not kept, only its bounded preview."""

    position: int
    key: str
    message_id: str | None
    routing_key: str
    deaths: tuple[Death, ...]
    first_death_reason: str | None
    user_id: str | None
    app_id: str | None
    content_type: str | None
    size: int
    is_json: bool
    text: str
    truncated: bool
    action: str | None = None
    agent: str | None = None
    trace: str | None = None

    @property
    def death(self) -> Death | None:
        """The first ``x-death`` entry: the latest queue and reason."""
        return self.deaths[0] if self.deaths else None


@dataclass(slots=True)
class Peek:
    letters: list[DeadLetter] = field(default_factory=list)
    more: bool = False
    """True when the limit or the byte bound stopped the peek before the queue's end."""
    problem: str | None = None


@dataclass(slots=True)
class Outcome:
    """What an action did, by message key."""

    done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Not among the first ``limit`` messages (gone meanwhile): nothing done."""
    anonymous: list[str] = field(default_factory=list)
    """Requeued without their ``user_id``, which was another broker user's."""
    failed: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    """The walk stopped (the broker refused, the channel closed): what was not reached is left as it was."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return str(value)[:TEXT_CUT]


def key_of(message: AbstractIncomingMessage) -> str:
    """How a form names a message: its ``message_id``, else a hash of its body."""
    if message.message_id:
        return message.message_id
    return "sha256:" + hashlib.sha256(message.body).hexdigest()[:32]


def _deaths(headers: Mapping[str, Any]) -> tuple[Death, ...]:
    entries = headers.get("x-death")
    if not isinstance(entries, list | tuple):
        return ()
    deaths = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        count = entry.get("count")
        when = entry.get("time")
        keys = entry.get("routing-keys")
        deaths.append(
            Death(
                reason=_text(entry.get("reason")),
                count=count if isinstance(count, int) else None,
                queue=_text(entry.get("queue")),
                exchange=_text(entry.get("exchange")),
                time=when if isinstance(when, datetime) else None,
                routing_keys=tuple(k for k in map(_text, keys) if k) if isinstance(keys, list | tuple) else (),
            )
        )
    return tuple(deaths)


def hexdump(data: bytes) -> str:
    """Offset, 16 bytes in hex, and their printable ASCII: the usual picture of bytes that are no text."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        shown = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  |{shown}|")
    return "\n".join(lines)


def _json_of(body: bytes) -> tuple[bool, Any]:
    if len(body) > MAX_PARSE_BYTES:
        return False, None
    try:
        return True, json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def _pulled(envelope: Any) -> dict[str, str | None]:
    """A command envelope's action, requester and trace, where they are (anything else: absent)."""
    if not isinstance(envelope, dict):
        return {}
    data = envelope.get("data")
    data = data if isinstance(data, dict) else {}
    context = data.get("context")
    context = context if isinstance(context, dict) else {}
    return {
        "action": _text(data.get("action")),
        "agent": _text(context.get("requester_id") or envelope.get("source")),
        "trace": _text(context.get("requester_trace_id")),
    }


def view(position: int, message: AbstractIncomingMessage) -> DeadLetter:
    """One message as the page shows it: JSON pretty-printed (cut), anything else as bounded hex."""
    body = message.body
    headers = message.headers or {}
    is_json, envelope = _json_of(body)
    if is_json:
        pretty = json.dumps(envelope, indent=2, ensure_ascii=False, sort_keys=True, default=str)
        text, truncated = pretty[:PREVIEW_CHARS], len(pretty) > PREVIEW_CHARS
    else:
        text, truncated = hexdump(body[:PREVIEW_BYTES]), len(body) > PREVIEW_BYTES
    return DeadLetter(
        position=position,
        key=key_of(message),
        message_id=message.message_id,
        routing_key=message.routing_key or "",
        deaths=_deaths(headers),
        first_death_reason=_text(headers.get("x-first-death-reason")),
        user_id=message.user_id,
        app_id=message.app_id,
        content_type=message.content_type,
        size=len(body),
        is_json=is_json,
        text=text,
        truncated=truncated,
        **_pulled(envelope),
    )


def requeue_key(message: AbstractIncomingMessage) -> str:
    """The command routing key the message first had: the oldest ``x-death`` entry's keys, then its own key;
    a message that never had one (published straight into the DLQ) goes to any storage node."""
    candidates: list[str] = []
    for death in reversed(_deaths(message.headers or {})):
        candidates.extend(death.routing_keys)
    candidates.append(message.routing_key or "")
    for key in candidates:
        if key.startswith(COMMAND_KEY_PREFIX) and len(key.encode()) <= 255:
            return key
    return topology.ROUTING_KEY_ANY


def _copy(message: AbstractIncomingMessage, broker_user: str) -> aio_pika.Message:
    """The command again: original properties minus ``expiration`` and the broker's death records, and
    minus a ``user_id`` that is not the console's own (see the module's docstring)."""
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(DEATH_HEADERS)}
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=message.delivery_mode,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        user_id=message.user_id if message.user_id == broker_user else None,
        app_id=message.app_id,
    )


async def _open(connection: AbstractRobustConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def peek(connection: AbstractRobustConnection, queue_name: str, limit: int = DEFAULT_LIMIT) -> Peek:
    """The first ``limit`` dead letters, in queue order, all handed back unconsumed."""
    limit = max(1, min(limit, MAX_LIMIT))
    found = Peek()
    read_bytes = 0
    async with _LOCK:
        channel = await _open(connection)
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            while (message := await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_S)) is not None:
                if len(found.letters) >= limit or read_bytes >= MAX_PEEK_BYTES:
                    found.more = True  # one more was there (and goes back with the rest)
                    break
                read_bytes += len(message.body)
                found.letters.append(view(len(found.letters) + 1, message))
        except (AMQPError, TimeoutError) as exc:
            found.problem = f"{type(exc).__name__}: {exc}"
        finally:
            if not channel.is_closed:
                await channel.close()  # no ack was sent: every message goes back to its place
    return found


Act = Callable[[AbstractChannel, AbstractIncomingMessage, str, Outcome], Awaitable[None]]


async def _walk(
    connection: AbstractRobustConnection,
    queue_name: str,
    keys: Iterable[str],
    limit: int,
    act: Act,
    prepare: Callable[[AbstractChannel], Awaitable[None]] | None = None,
) -> Outcome:
    """Take messages from the head until every wanted key was met once (or ``limit``); ``act`` on those."""
    wanted = dict.fromkeys(keys)
    outcome = Outcome()
    limit = max(1, min(limit, MAX_LIMIT))
    async with _LOCK:
        channel = await _open(connection)
        try:
            if prepare is not None:
                await prepare(channel)
            queue = await channel.declare_queue(queue_name, passive=True)
            for _ in range(limit):
                if not wanted:
                    break
                message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_S)
                if message is None:
                    break
                key = key_of(message)
                if key in wanted:
                    del wanted[key]
                    await act(channel, message, key, outcome)
        except (AMQPError, TimeoutError) as exc:
            outcome.problem = f"{type(exc).__name__}: {exc}"
        finally:
            if not channel.is_closed:
                await channel.close()  # the messages not acked go back to their places
    if outcome.problem is None:
        outcome.missing = list(wanted)
    return outcome


async def discard(
    connection: AbstractRobustConnection, queue_name: str, keys: Sequence[str], *, limit: int = DEFAULT_LIMIT
) -> Outcome:
    """Ack the chosen dead letters: gone for good."""

    async def drop(channel: AbstractChannel, message: AbstractIncomingMessage, key: str, outcome: Outcome) -> None:
        await message.ack()
        outcome.done.append(key)

    return await _walk(connection, queue_name, keys, limit, drop)


async def requeue(
    connection: AbstractRobustConnection,
    queue_name: str,
    keys: Sequence[str],
    *,
    exchange: str,
    broker_user: str,
    limit: int = DEFAULT_LIMIT,
) -> Outcome:
    """Publish each chosen dead letter to the command exchange with its original routing key, wait for the
    broker's confirm, then ack it. Unroutable or refused: left in the DLQ, and said so."""
    target: list[AbstractExchange] = []

    async def find_exchange(channel: AbstractChannel) -> None:
        target.append(await channel.get_exchange(exchange, ensure=True))

    async def send(channel: AbstractChannel, message: AbstractIncomingMessage, key: str, outcome: Outcome) -> None:
        copy = _copy(message, broker_user)
        try:
            await target[0].publish(copy, routing_key=requeue_key(message), mandatory=True)
        except PublishError:  # returned: no queue is bound to its key; the channel stays usable
            outcome.failed[key] = f"no queue takes routing key {requeue_key(message)!r}"
            return
        except DeliveryError as exc:  # nacked by the broker
            outcome.failed[key] = f"refused by the broker ({exc})"
            return
        await message.ack()
        outcome.done.append(key)
        if message.user_id and copy.user_id is None:
            outcome.anonymous.append(key)

    return await _walk(connection, queue_name, keys, limit, send, prepare=find_exchange)
