"""Reply envelopes as bytes. The ``data`` part is kept as the exact JSON text stored in the inbox."""

from __future__ import annotations

import json
import time
from datetime import datetime

from contracts import ERROR_TYPE, RESULT_TYPE, ErrorCode, Output, StorageError, new_id, utc_now
from service.store.inbox import StoredReply


def elapsed_ms(started_monotonic: float) -> int:
    return max(0, int((time.monotonic() - started_monotonic) * 1000))


def result_reply(output: Output, started_monotonic: float) -> StoredReply:
    # pydantic writes the output's JSON itself (the same text json.dumps would make of model_dump(mode="json"),
    # in a fraction of the time): the result is assembled around it.
    data = (
        f'{{"status":"SUCCESS","output":{output.model_dump_json()},'
        f'"execution_time_ms":{elapsed_ms(started_monotonic)}}}'
    )
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
    return StoredReply(new_id(), ERROR_TYPE, body, utc_now())


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
