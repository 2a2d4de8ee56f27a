"""Reply envelopes as bytes. The ``data`` part is kept as the exact JSON text stored in the inbox."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from datetime import datetime

from contracts import ERROR_TYPE, RESULT_TYPE, ErrorCode, Output, StorageError, new_id, utc_now
from service.store.inbox import StoredReply

log = logging.getLogger(__name__)


def elapsed_ms(started_monotonic: float) -> int:
    return max(0, int((time.monotonic() - started_monotonic) * 1000))


class Prewritten:
    """A mixin for an output that carries its JSON text already written, in the shape ``model_dump_json``
    would give it: ``result_reply`` splices that text instead of serialising the model (a listing of
    manifests stored as that text). The output stays an instance of its contract model."""

    __slots__ = ()

    def output_json(self) -> str:
        raise NotImplementedError


def result_reply(output: Output, started_monotonic: float) -> StoredReply:
    # pydantic writes the output's JSON itself (the same text json.dumps would make of model_dump(mode="json"),
    # in a fraction of the time): the result is assembled around it.
    text = output.output_json() if isinstance(output, Prewritten) else output.model_dump_json()
    data = f'{{"status":"SUCCESS","output":{text},"execution_time_ms":{elapsed_ms(started_monotonic)}}}'
    return StoredReply(new_id(), RESULT_TYPE, data, utc_now())


def error_reply(error: StorageError, started_monotonic: float) -> StoredReply:
    return error_reply_of(error.code, error.message, error.details, error.retryable, started_monotonic)


def error_reply_of(
    code: ErrorCode,
    message: str,
    details: dict[str, object] | None,
    retryable: bool,
    started_monotonic: float,
) -> StoredReply:
    data = {
        "error": {"code": code.value, "message": message, "retryable": retryable, "details": details or {}},
        "execution_time_ms": elapsed_ms(started_monotonic),
    }
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return StoredReply(new_id(), ERROR_TYPE, body, utc_now(), code=code.value)


def envelope_bytes(
    reply: StoredReply,
    *,
    source: str,
    correlation_id: str | None,
    subject: str | None = None,
    traceparent: str | None = None,
) -> bytes:
    """The CloudEvent around a stored reply; routing fields come from the command being answered."""
    head: dict[str, object] = {
        "specversion": "1.0",
        "type": reply.reply_type,
        "source": source,
        "id": reply.reply_id,
        "time": _iso(reply.time),
        "datacontenttype": "application/json",
    }
    if correlation_id is not None:
        head["correlationid"] = correlation_id
    if subject is not None:
        head["subject"] = subject
    if traceparent is not None:
        head["traceparent"] = traceparent
    text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
    return (text[:-1] + ',"data":' + reply.data_json + "}").encode()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


_ELAPSED = re.compile(r'"execution_time_ms":(\d+)\}$')


def bounded_envelope(
    reply: StoredReply,
    *,
    max_bytes: int,
    source: str,
    correlation_id: str | None,
    subject: str | None = None,
    traceparent: str | None = None,
) -> tuple[StoredReply, bytes]:
    """The reply and its CloudEvent, or, when that would exceed ``max_bytes``, an ERROR in its place.

    The last guard of ``STORAGE_MAX_REPLY_BYTES``: paged handlers cut their pages to fit, so only an
    estimate gone wrong (or a huge ``subject`` echoed back) gets here. RabbitMQ would refuse the message and
    close the channel, and the command would come back forever; a non-retryable RESOURCE_EXHAUSTED with
    ``reason: reply_too_large`` ends it instead (a retry would build the same reply).
    """
    body = envelope_bytes(reply, source=source, correlation_id=correlation_id, subject=subject, traceparent=traceparent)
    if len(body) <= max_bytes:
        return reply, body
    log.warning(
        "a %s reply of %d bytes exceeds the %d-byte cap: answered as an error", reply.reply_type, len(body), max_bytes
    )
    elapsed = _ELAPSED.search(reply.data_json[-40:])
    data = {
        "error": {
            "code": ErrorCode.RESOURCE_EXHAUSTED.value,
            "message": f"the reply would be {len(body)} bytes, more than the {max_bytes} allowed; ask for less",
            "retryable": False,
            "details": {"reason": "reply_too_large", "size_bytes": len(body), "limit_bytes": max_bytes},
        },
        "execution_time_ms": int(elapsed.group(1)) if elapsed else 0,
    }
    refusal = replace(
        reply,
        reply_type=ERROR_TYPE,
        data_json=json.dumps(data, separators=(",", ":")),
        code=ErrorCode.RESOURCE_EXHAUSTED.value,
    )
    body = envelope_bytes(
        refusal, source=source, correlation_id=correlation_id, subject=subject, traceparent=traceparent
    )
    if len(body) > max_bytes:  # the command's own subject or traceparent is what is too large to echo
        body = envelope_bytes(refusal, source=source, correlation_id=correlation_id)
    return refusal, body
