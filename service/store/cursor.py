"""Opaque keyset cursors: the (time, id) of the last item of a page, base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from contracts import InvalidArgument


def encode(moment: datetime, item_id: str) -> str:
    raw = json.dumps([moment.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, item_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        parsed = datetime.fromisoformat(moment)
        if not isinstance(item_id, str) or parsed.tzinfo is None:
            raise ValueError("bad cursor shape")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("cursor is not one this worker issued", {"field": "cursor"}) from exc
    return parsed, item_id
