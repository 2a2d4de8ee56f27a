"""One command's path, in the order of docs/contract.md §1: size and parse, inbox, expiry, target, execute.

The pipeline turns a delivery into an ``Outcome``: the reply and its bytes (or none) and how to settle the
message. It knows AMQP only as the handful of properties it reads; the transport does the I/O.
``process`` never raises: whatever goes wrong unexpectedly is answered INTERNAL and the message settles,
so no input can leave a delivery unacked (redelivered forever, holding a prefetch slot each time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from pydantic import ValidationError

from contracts import (
    ERROR_TYPE,
    CommandEnvelope,
    DeadlineExceeded,
    ErrorBody,
    ErrorCode,
    ErrorData,
    ErrorEnvelope,
    FailedPrecondition,
    InvalidArgument,
    Output,
    PermissionDenied,
    StorageError,
    Unimplemented,
    new_id,
    utc_now,
)
from service.core.actions import Action, ActionTable
from service.core.context import HandlerContext, Services
from service.core.envelopes import errors_of, loose_id, parse, summary_of
from service.core.recording import Committed, Duplicate, Recorder
from service.core.replies import bounded_envelope, error_reply, error_reply_of, result_reply
from service.identity import Requester, check_requester, requester_of
from service.store import inbox
from service.store.inbox import StoredReply

log = logging.getLogger(__name__)


class Settle(Enum):
    ACK = "ack"
    REJECT = "reject"
    """Reject without requeue: the broker dead-letters it to the DLQ."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The parts of an AMQP message the pipeline reads."""

    body: bytes
    reply_to: str | None = None
    correlation_id: str | None = None
    user_id: str | None = None
    expiration_ms: float | None = None
    timestamp: datetime | None = None
    """The AMQP ``timestamp`` (aware): what ``expiration`` counts from when the envelope has no ``time``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one delivery: its reply, the reply's bytes (when it has a ``reply_to``), how to settle."""

    settle: Settle
    reply: StoredReply | None
    """None only when not even the last-resort INTERNAL reply could be built."""
    body: bytes | None
    correlation_id: str | None
    command: CommandEnvelope | None = None
    """The envelope, when the body was one."""
    requester: Requester | None = None

    @property
    def action(self) -> str | None:
        return self.command.data.action if self.command is not None else None

    @property
    def code(self) -> str:
        """``OK`` or the error code: what metrics and the log line count."""
        return self.reply.code if self.reply is not None else ErrorCode.INTERNAL.value

    @property
    def replayed(self) -> bool:
        """Answered from the inbox: the stored reply of an earlier delivery, nothing executed again."""
        return self.reply is not None and self.reply.replayed

    @property
    def requester_id(self) -> str | None:
        return self.requester.id if self.requester is not None else None

    @property
    def envelope_id(self) -> str | None:
        return self.command.id if self.command is not None else None

    @property
    def trace_id(self) -> str | None:
        """The MindBus trace the requester works in (``data.context.requester_trace_id``)."""
        trace = (self.command.data.context or {}).get("requester_trace_id") if self.command else None
        return str(trace) if trace is not None else None

    @property
    def traceparent(self) -> str | None:
        return self.command.traceparent if self.command is not None else None


class Pipeline:
    def __init__(self, services: Services, actions: ActionTable) -> None:
        self.services = services
        self.actions = actions
        self.settings = services.settings
        self.source = services.settings.node_name

    async def process(self, delivery: Delivery) -> Outcome:
        """The delivery's outcome; an unexpected exception at any stage is answered INTERNAL, never raised."""
        started = time.monotonic()
        try:
            return await self._process(delivery, started)
        except Exception:
            log.exception("a delivery failed unexpectedly (correlation id %r)", delivery.correlation_id)
            return self.crashed(delivery, started)

    async def _process(self, delivery: Delivery, started: float) -> Outcome:
        try:
            envelope = parse(delivery.body, self.settings.max_message_bytes)
        except InvalidArgument as refusal:
            return self._finish(delivery, None, None, error_reply(refusal, started), settle=Settle.REJECT)
        data = envelope.data
        who = requester_of(envelope, delivery.user_id, self.settings)
        action = self.actions.get(data.action)
        recorder: Recorder | None = None
        if action is not None and action.spec.writes:
            recorder = Recorder(
                envelope.id,
                data.action,
                data.idempotency_key,
                inbox.request_hash(data.action, data.params),
                started,
                requester=inbox.ANONYMOUS if who.id is None else who.id,
            )
            try:
                check_requester(who)  # the inbox keys on it: an identity no column can hold is refused first
                async with self.services.lookup() as conn:
                    stored = await recorder.lookup(conn)
            except StorageError as exc:
                return self._finish(delivery, envelope, who, error_reply(exc, started))
            if stored is not None:
                return self._finish(delivery, envelope, who, stored)
        if (gated := self._gate(envelope, delivery)) is not None:
            return self._finish(delivery, envelope, who, error_reply(gated, started))
        reply = await self._execute(envelope, action, who, recorder, started)
        return self._finish(delivery, envelope, who, reply)

    def _gate(self, envelope: CommandEnvelope, delivery: Delivery) -> StorageError | None:
        """Expiry and target node: a command that fails either is answered but not executed.

        The age counts from the envelope ``time``, else from the AMQP ``timestamp``; with neither it is unknown.
        """
        sent = envelope.time or delivery.timestamp
        if delivery.expiration_ms is not None and sent is not None:
            age_ms = (utc_now() - sent).total_seconds() * 1000
            if age_ms > delivery.expiration_ms:
                return DeadlineExceeded(
                    "command expired before it could be executed",
                    {"age_ms": int(age_ms), "expiration_ms": delivery.expiration_ms},
                    retryable=False,
                )
        context = envelope.data.context or {}
        target = envelope.data.target_node or context.get("target_node")
        if target is not None and target != self.settings.node_name:
            return FailedPrecondition(
                f"command is addressed to node {target!r}, this is {self.settings.node_name!r}",
                {"target_node": target, "node": self.settings.node_name},
            )
        return None

    async def _execute(
        self,
        envelope: CommandEnvelope,
        action: Action | None,
        requester: Requester,
        recorder: Recorder | None,
        started: float,
    ) -> StoredReply:
        """Run the handler; its reply (the stored one for a recorded commit) is the command's reply."""
        data = envelope.data
        try:
            if action is None:
                raise Unimplemented(
                    f"unknown action {data.action!r}", {"action": data.action, "supported": sorted(self.actions)}
                )
            try:
                params = action.spec.params.model_validate(data.params)
            except ValidationError as exc:
                raise InvalidArgument(summary_of(exc), {"errors": errors_of(exc)}) from None
            check_requester(requester)
            if action.spec.admin and not requester.is_admin:
                raise PermissionDenied(
                    f"{data.action} is an admin action", {"action": data.action, "requester": requester.id}
                )
            ctx = HandlerContext(self.services, requester, recorder=recorder)
            if data.timeout_seconds is not None:
                # Cancels the handler only until its commit starts: ``HandlerContext.commit`` disarms it there (or
                # refuses the commit if it already fired), so a commit is never cut off from what follows it.
                async with asyncio.timeout(data.timeout_seconds) as deadline:
                    ctx.deadline = deadline
                    result = await action.handler(params, ctx)
            else:
                result = await action.handler(params, ctx)
        except Duplicate as dup:
            return dup.reply
        except TimeoutError:
            error: StorageError = DeadlineExceeded(
                "the command's own timeout ran out", {"timeout_seconds": data.timeout_seconds}
            )
            return await self._store_failure(recorder, error, started)
        except StorageError as exc:
            return await self._store_failure(recorder, exc, started)
        except Exception:
            log.exception("action %s failed unexpectedly (envelope %s)", data.action, envelope.id)
            return error_reply_of(ErrorCode.INTERNAL, "internal error", {"action": data.action}, False, started)
        return await self._reply_of(result, recorder, started)

    async def _reply_of(
        self, result: Output | Committed[Output], recorder: Recorder | None, started: float
    ) -> StoredReply:
        """A committed reply as stored; any other output is answered (and, for a write, recorded) now."""
        if isinstance(result, Committed):
            if result.reply is not None:
                return result.reply
            result = result.output
        reply = result_reply(result, started)
        if recorder is not None:  # a write that committed nothing of its own (already registered, say)
            return await self._record(recorder, reply, started)
        return reply

    async def _store_failure(self, recorder: Recorder | None, error: StorageError, started: float) -> StoredReply:
        reply = error_reply(error, started)
        if recorder is None or error.retryable:
            return reply  # retryable errors are never stored: a retry must be able to succeed
        return await self._record(recorder, reply, started)

    async def _record(self, recorder: Recorder, reply: StoredReply, started: float) -> StoredReply:
        try:
            return await recorder.record(self.services.writer, reply)
        except StorageError as exc:
            return error_reply(exc, started)

    def crashed(self, delivery: Delivery, started: float) -> Outcome:
        """The last resort after an unexpected exception: ERROR INTERNAL (no trace) and a settled message.

        Acked when the body reads as a COMMAND envelope (the failure was ours, after reading it), else
        dead-lettered. The reply is built by a path of its own, the contract's ``ErrorEnvelope``, so a bug
        in the usual reply building cannot take it down too; if even that fails, the message settles
        without a reply rather than not at all.
        """
        envelope: CommandEnvelope | None = None
        try:
            envelope = parse(delivery.body, self.settings.max_message_bytes)
        except Exception:
            envelope = None
        settle = Settle.REJECT if envelope is None else Settle.ACK
        correlation_id = delivery.correlation_id or (envelope.id if envelope else None)
        reply = StoredReply(new_id(), ERROR_TYPE, "", utc_now(), code=ErrorCode.INTERNAL.value)
        body = None
        if delivery.reply_to:
            try:
                if correlation_id is None:
                    correlation_id = loose_id(delivery.body)
                body = ErrorEnvelope(
                    id=reply.reply_id,
                    source=self.source,
                    correlationid=correlation_id,
                    data=ErrorData(
                        error=ErrorBody(code=ErrorCode.INTERNAL, message="internal error", retryable=False),
                        execution_time_ms=max(0, int((time.monotonic() - started) * 1000)),
                    ),
                ).to_json_bytes()
            except Exception:
                log.exception("not even an INTERNAL reply could be built: the message settles unanswered")
        return Outcome(settle, reply, body, correlation_id, envelope)

    def _finish(
        self,
        delivery: Delivery,
        envelope: CommandEnvelope | None,
        requester: Requester | None,
        reply: StoredReply,
        *,
        settle: Settle = Settle.ACK,
    ) -> Outcome:
        correlation_id = delivery.correlation_id or (envelope.id if envelope else loose_id(delivery.body))
        body = None
        if delivery.reply_to:
            reply, body = bounded_envelope(  # never more than STORAGE_MAX_REPLY_BYTES: else an ERROR instead
                reply,
                max_bytes=self.settings.max_reply_bytes,
                source=self.source,
                correlation_id=correlation_id,
                subject=envelope.subject if envelope else None,
                traceparent=envelope.traceparent if envelope else None,
            )
        return Outcome(settle, reply, body, correlation_id, envelope, requester)
