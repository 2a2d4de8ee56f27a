"""One command's path, in the order of docs/contract.md §1: size and parse, inbox, expiry, target, execute.

The pipeline turns a delivery into an ``Outcome``: the reply bytes (or none) and how to settle the
message. It knows AMQP only as the handful of properties it reads; the transport does the I/O.
``process`` never raises: whatever goes wrong unexpectedly is answered INTERNAL and the message settles,
so no input can leave a delivery unacked (redelivered forever, holding a prefetch slot each time).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import ValidationError

from contracts import (
    ACTIONS,
    CommandEnvelope,
    DeadlineExceeded,
    ErrorBody,
    ErrorCode,
    ErrorData,
    ErrorEnvelope,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    StorageError,
    Unimplemented,
    new_id,
    utc_now,
)
from service.core.context import HandlerContext, Services
from service.core.recording import Duplicate, Recorder
from service.core.replies import bounded_envelope, error_reply, error_reply_of, result_reply
from service.handlers import HANDLERS
from service.identity import check_requester, requester_of
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
    settle: Settle
    reply: bytes | None
    reply_to: str | None
    correlation_id: str | None
    reply_id: str | None
    action: str
    code: str
    """``OK`` or the error code: what metrics and the log line count."""
    requester: str | None = None
    trace_id: str | None = None
    """The MindBus trace the requester works in (``data.context.requester_trace_id``)."""
    traceparent: str | None = None
    envelope_id: str | None = None
    replayed: bool = False
    """Answered from the inbox: the stored reply of an earlier delivery, nothing executed again."""


class Pipeline:
    def __init__(self, services: Services) -> None:
        self.services = services
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
        envelope, refusal = self._parse(delivery)
        if envelope is None:
            assert refusal is not None
            return self._finish(delivery, None, error_reply(refusal, started), "-", settle=Settle.REJECT)
        data = envelope.data
        spec = ACTIONS.get(data.action)
        recorder: Recorder | None = None
        if spec is not None and spec.writes:
            who = requester_of(envelope, delivery.user_id, self.settings)
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
                return self._finish(delivery, envelope, error_reply(exc, started), data.action)
            if stored is not None:
                return self._finish(delivery, envelope, stored, data.action)
        if (refusal := self._gate(envelope, delivery)) is not None:
            return self._finish(delivery, envelope, error_reply(refusal, started), data.action)
        reply = await self._execute(envelope, delivery, recorder, started)
        return self._finish(delivery, envelope, reply, data.action)

    def _parse(self, delivery: Delivery) -> tuple[CommandEnvelope | None, StorageError | None]:
        limit = self.settings.max_message_bytes
        if len(delivery.body) > limit:
            return None, InvalidArgument(
                f"message body is {len(delivery.body)} bytes, at most {limit} allowed",
                {"reason": "message_too_large", "size_bytes": len(delivery.body), "limit_bytes": limit},
            )
        try:
            envelope = CommandEnvelope.model_validate_json(delivery.body)
        except ValidationError as exc:
            return None, InvalidArgument("not a valid COMMAND envelope", {"errors": _errors(exc)})
        if _has_lone_surrogates(delivery.body):
            return None, InvalidArgument(
                "message body holds unpaired UTF-16 surrogate escapes: not valid Unicode",
                {"reason": "invalid_unicode"},
            )
        if _has_non_finite_numbers(delivery.body):
            return None, InvalidArgument(
                "message body holds NaN, Infinity or a number beyond a double: not JSON a peer can keep (RFC 8259)",
                {"reason": "non_finite_number"},
            )
        if envelope.time is not None and envelope.time - utc_now() > MAX_CLOCK_AHEAD:
            return None, InvalidArgument(
                f"envelope time is more than {int(MAX_CLOCK_AHEAD.total_seconds())} s in the future",
                {"reason": "time_in_future", "field": "time"},
            )
        return envelope, None

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
        self, envelope: CommandEnvelope, delivery: Delivery, recorder: Recorder | None, started: float
    ) -> StoredReply:
        data = envelope.data
        spec = ACTIONS.get(data.action)
        try:
            if spec is None:
                raise Unimplemented(
                    f"unknown action {data.action!r}", {"action": data.action, "supported": sorted(HANDLERS)}
                )
            try:
                params = spec.params.model_validate(data.params)
            except ValidationError as exc:
                raise InvalidArgument(_summary(exc), {"errors": _errors(exc)}) from None
            requester = requester_of(envelope, delivery.user_id, self.settings)
            check_requester(requester)
            if spec.admin and not requester.is_admin:
                raise PermissionDenied(
                    f"{data.action} is an admin action", {"action": data.action, "requester": requester.id}
                )
            ctx = HandlerContext(self.services, requester, recorder=recorder)
            handler = HANDLERS.get(data.action)
            if handler is None:
                raise Unimplemented(
                    f"action {data.action!r} is not served by this worker version",
                    {"action": data.action, "supported": sorted(HANDLERS)},
                )
            if data.timeout_seconds is not None:
                # Cancels the handler only until its write starts: ``HandlerContext.write`` disarms it there (or
                # refuses the write if it already fired), so a commit is never cut off from what follows it.
                async with asyncio.timeout(data.timeout_seconds) as deadline:
                    ctx.deadline = deadline
                    output = await handler(params, ctx)
            else:
                output = await handler(params, ctx)
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
        if recorder is not None and recorder.stored is not None:
            return recorder.stored
        reply = result_reply(output, started)
        if recorder is not None:
            return await self._record(recorder, reply, started)
        return reply

    async def _store_failure(self, recorder: Recorder | None, error: StorageError, started: float) -> StoredReply:
        if recorder is not None and recorder.stored is not None:
            return recorder.stored  # the error was recorded with the write that raised it
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
            envelope, _ = self._parse(delivery)
        except Exception:
            envelope = None
        settle = Settle.REJECT if envelope is None else Settle.ACK
        action = envelope.data.action if envelope is not None else "-"
        correlation_id = delivery.correlation_id or (envelope.id if envelope else None)
        reply_id = new_id()
        body = None
        if delivery.reply_to:
            try:
                if correlation_id is None:
                    correlation_id = _loose_id(delivery.body)
                body = ErrorEnvelope(
                    id=reply_id,
                    source=self.source,
                    correlationid=correlation_id,
                    data=ErrorData(
                        error=ErrorBody(code=ErrorCode.INTERNAL, message="internal error", retryable=False),
                        execution_time_ms=max(0, int((time.monotonic() - started) * 1000)),
                    ),
                ).to_json_bytes()
            except Exception:
                log.exception("not even an INTERNAL reply could be built: the message settles unanswered")
        return Outcome(settle, body, delivery.reply_to, correlation_id, reply_id, action, ErrorCode.INTERNAL.value)

    def _finish(
        self,
        delivery: Delivery,
        envelope: CommandEnvelope | None,
        reply: StoredReply,
        action: str,
        *,
        settle: Settle = Settle.ACK,
    ) -> Outcome:
        correlation_id = delivery.correlation_id or (envelope.id if envelope else _loose_id(delivery.body))
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
        code = "OK" if reply.reply_type.endswith("result") else _code_of(reply)
        if envelope is None:
            return Outcome(settle, body, delivery.reply_to, correlation_id, reply.reply_id, action, code)
        trace = (envelope.data.context or {}).get("requester_trace_id")
        return Outcome(
            settle,
            body,
            delivery.reply_to,
            correlation_id,
            reply.reply_id,
            action,
            code,
            requester=requester_of(envelope, delivery.user_id, self.settings).id,
            trace_id=str(trace) if trace is not None else None,
            traceparent=envelope.traceparent,
            envelope_id=envelope.id,
            replayed=bool(reply.envelope_id),  # only a reply read back from the inbox carries its envelope id
        )


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)[:20]
    ]


def _summary(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "(params)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid params: {field}: {first['msg']}{more}"


MAX_CLOCK_AHEAD = timedelta(minutes=5)
"""How far in the future an envelope ``time`` may be (clock skew); beyond, the envelope is invalid."""


def _has_non_finite_numbers(body: bytes) -> bool:
    """``NaN``, ``Infinity``, ``-Infinity`` or a number beyond a double (``1e400``): pydantic reads them as floats.

    None is JSON a peer can keep (RFC 8259 has no such values; a double cannot hold 1e400): PostgreSQL refuses
    them in a JSON column, SQLite stores null or the bare word, a reply carrying one no strict parser reads.
    The cheap part runs on every body: two substring searches, and one ``bytes.translate`` that folds digits
    and exponent marks so that three more searches find any 3-digit exponent or 309-digit run. Only a body
    that might hold such a number (a hex string can look like one) is parsed again to look at its numbers.
    """
    if b"NaN" not in body and b"Infinity" not in body:
        folded = body.translate(_NUMBER_SHAPE)
        if b"0e000" not in folded and b"0e+000" not in folded and _LONG_DIGITS not in folded:
            return False
    try:
        json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite:
        return True
    except (ValueError, RecursionError):
        return False
    return False


_NUMBER_SHAPE = bytes(
    ord("0") if chr(i).isdigit() else ord("e") if chr(i) in "eE" else ord("+") if chr(i) in "+-" else ord(" ")
    for i in range(256)
)
"""Digits → ``0``, ``e``/``E`` → ``e``, signs → ``+``, the rest → a space: number shapes, whatever the digits."""
_LONG_DIGITS = b"0" * 309
"""A number with 309 digits before its exponent may exceed a double (1.8e308), even without an exponent."""


class _NonFinite(Exception):
    """A ``NaN`` or ``Infinity`` token met while parsing."""


def _refuse_constant(token: str) -> float:
    raise _NonFinite(token)


def _finite_float(token: str) -> float:
    value = float(token)
    if math.isinf(value):
        raise _NonFinite(token)
    return value


def _loose_id(body: bytes) -> str | None:
    """The envelope id of a body that failed validation, when it is at least a JSON object with one."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) and len(found) <= 255 and _encodable(found) else None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogates(body: bytes) -> bool:
    """JSON can escape a lone UTF-16 surrogate (``"\\ud800"``); no UTF-8 reply, log or row could carry it.

    Cheap for every normal body (one regex scan); only a body with such escapes (an emoji escaped as a
    surrogate pair is fine) is decoded again to find an unpaired one.
    """
    if not _SURROGATE_ESCAPE.search(body):
        return False
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _code_of(reply: StoredReply) -> str:
    try:
        return str(json.loads(reply.data_json)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "INTERNAL"
