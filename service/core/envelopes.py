"""Reading a COMMAND envelope off the wire: size, JSON shape, and the values no peer could keep.

Every check here refuses with INVALID_ARGUMENT and a ``reason``; the pipeline dead-letters such a message.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from contracts import CommandEnvelope, InvalidArgument, utc_now


def parse(body: bytes, limit: int) -> CommandEnvelope:
    """The COMMAND envelope of a message body, or the INVALID_ARGUMENT that refuses it (raised)."""
    if len(body) > limit:
        raise InvalidArgument(
            f"message body is {len(body)} bytes, at most {limit} allowed",
            {"reason": "message_too_large", "size_bytes": len(body), "limit_bytes": limit},
        )
    try:
        envelope = CommandEnvelope.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidArgument("not a valid COMMAND envelope", {"errors": errors_of(exc)}) from None
    if _has_lone_surrogates(body):
        raise InvalidArgument(
            "message body holds unpaired UTF-16 surrogate escapes: not valid Unicode",
            {"reason": "invalid_unicode"},
        )
    if _has_non_finite_numbers(body):
        raise InvalidArgument(
            "message body holds NaN, Infinity or a number beyond a double: not JSON a peer can keep (RFC 8259)",
            {"reason": "non_finite_number"},
        )
    if envelope.time is not None and envelope.time - utc_now() > MAX_CLOCK_AHEAD:
        raise InvalidArgument(
            f"envelope time is more than {int(MAX_CLOCK_AHEAD.total_seconds())} s in the future",
            {"reason": "time_in_future", "field": "time"},
        )
    return envelope


def errors_of(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)[:20]
    ]


def summary_of(exc: ValidationError) -> str:
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


def loose_id(body: bytes) -> str | None:
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
