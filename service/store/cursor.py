"""Opaque keyset cursors: the (time, id) of the last item of a page, base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from sqlalchemy import Column, ColumnElement, and_, or_
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import InvalidArgument
from service.store.types import AnyRow, AnySelect


def encode(moment: datetime, item_id: str) -> str:
    raw = json.dumps([moment.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """The cursor's (time, id), the time in UTC; anything else (a forgery, a time UTC cannot hold) is refused.

    The conversion to UTC happens here, where its overflow (year 1 at +14:00) is the sender's error: left
    to the database driver it would surface as an internal failure.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, item_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        parsed = datetime.fromisoformat(moment)
        if not isinstance(item_id, str) or parsed.tzinfo is None:
            raise ValueError("bad cursor shape")
        parsed = parsed.astimezone(UTC)
        item_id.encode()  # a lone surrogate hidden in the base64 (UnicodeEncodeError is a ValueError)
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument("cursor is not one this worker issued", {"field": "cursor"}) from exc
    return parsed, item_id


def encode_key(key: str) -> str:
    """A cursor over a plain key order (namespace paths): the last key of the page, base64url."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_key(cursor: str, *, max_len: int) -> str:
    """The key of an ``encode_key`` cursor; a forgery that is not even one (or too long) is refused."""
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode()
        key = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidArgument("cursor is not one this worker issued", {"field": "cursor"}) from exc
    if not key or len(key) > max_len or "\x00" in key:  # PostgreSQL text cannot even compare with a NUL
        raise InvalidArgument("cursor is not one this worker issued", {"field": "cursor"})
    return key


def after(time_column: ColumnElement[datetime], id_column: ColumnElement[str], token: str) -> ColumnElement[bool]:
    """The condition for "older than the cursor's item" in newest-first (time, id) order."""
    after_time, after_id = decode(token)
    return or_(time_column < after_time, and_(time_column == after_time, id_column < after_id))


async def newest_first_page(
    conn: AsyncConnection,
    query: AnySelect,
    time_column: Column[datetime],
    id_column: Column[str],
    *,
    token: str | None,
    limit: int,
) -> tuple[list[AnyRow], str | None]:
    """One keyset page of ``query`` newest first, and the cursor of the next page (None on the last)."""
    if token is not None:
        query = query.where(after(time_column, id_column, token))
    query = query.order_by(time_column.desc(), id_column.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(getattr(rows[-1], time_column.key), getattr(rows[-1], id_column.key))
