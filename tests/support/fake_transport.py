"""Builders shared by the buffer tests: commands as the client makes them, and a scriptable fake transport."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from buffer.rpc import Reply
from contracts import CommandEnvelope, ErrorBody, ErrorData, ErrorEnvelope, ResultData, ResultEnvelope, make_command


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
    """Answers each call with ``respond(envelope)`` (a reply, or an exception to raise) and records it."""

    respond: Callable[[CommandEnvelope], Reply | Exception]
    sent: list[Sent] = field(default_factory=list)
    late_replies: int = 0
    closed: bool = False

    async def call(
        self, envelope: CommandEnvelope, *, routing_key: str, timeout_s: float, expire: bool = True
    ) -> Reply:
        self.sent.append(Sent(envelope, routing_key, timeout_s, expire))
        answer = self.respond(envelope)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True
