"""Builders shared by the buffer tests: commands as the client makes them, and a scriptable fake transport."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from buffer.live import Subscription
from buffer.rpc import Reply
from contracts import (
    CommandEnvelope,
    ControlEnvelope,
    ErrorBody,
    ErrorData,
    ErrorEnvelope,
    EventData,
    EventEnvelope,
    ResultData,
    ResultEnvelope,
    make_command,
)


def command(action: str = "save_thread", **params: Any) -> CommandEnvelope:
    """A write command with an idempotency key, like the client spills."""
    return make_command(
        action,
        params or {"thread_id": f"t-{uuid.uuid4().hex[:8]}"},
        source="agent-test",
        idempotency_key=str(uuid.uuid4()),
    )


def result(output: dict[str, Any] | None = None) -> ResultEnvelope:
    return ResultEnvelope(source="storage-primary", data=ResultData(output=output or {}))


def error(code: str, message: str = "refused", *, retryable: bool = False) -> ErrorEnvelope:
    return ErrorEnvelope(
        source="storage-primary",
        data=ErrorData(error=ErrorBody(code=code, message=message, retryable=retryable, details={"why": message})),
    )


@dataclass
class Sent:
    envelope: CommandEnvelope
    routing_key: str
    timeout_s: float
    expire: bool


@dataclass
class FakeTransport:
    """Answers each call with ``respond(envelope)`` (a reply, or an exception to raise) and records it.

    ``subscribe`` opens a subscription ``publish`` feeds (a topic key ending in ``#`` matches its prefix);
    ``log`` records calls and subscriptions in the order they happened.
    """

    respond: Callable[[CommandEnvelope], Reply | Exception]
    sent: list[Sent] = field(default_factory=list)
    late_replies: int = 0
    closed: bool = False
    subscriptions: list[Subscription] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    async def call(
        self, envelope: CommandEnvelope, *, routing_key: str, timeout_s: float, expire: bool = True
    ) -> Reply:
        self.sent.append(Sent(envelope, routing_key, timeout_s, expire))
        self.log.append(envelope.data.action)
        answer = self.respond(envelope)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True
        for subscription in self.subscriptions:
            await subscription.close()

    async def send_signal(self, envelope: ControlEnvelope, routing_key: str) -> None:
        self.log.append("signal " + routing_key)

    async def subscribe(self, routing_keys: Sequence[str]) -> Subscription:
        subscription = Subscription(routing_keys)
        self.subscriptions.append(subscription)
        self.log.append("subscribe " + " ".join(routing_keys))
        return subscription

    def publish(self, event_type: str, event_data: dict[str, Any], *, event_id: str | None = None) -> bytes:
        """An EVENT to every open subscription bound to ``event_type``; returns the body sent."""
        envelope = EventEnvelope(
            source="storage-primary",
            id=event_id or uuid.uuid4().hex,
            data=EventData(event_type=event_type, event_data=event_data),
        )
        body = envelope.to_json_bytes()
        for subscription in self.subscriptions:
            if not subscription.closed and any(_matches(key, event_type) for key in subscription.routing_keys):
                subscription.deliver(body)
        return body


def _matches(binding: str, routing_key: str) -> bool:
    return routing_key.startswith(binding[:-1]) if binding.endswith("#") else binding == routing_key
