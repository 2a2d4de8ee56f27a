"""The inbox: the stored reply of every executed write command, keyed by envelope id and idempotency key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.store.conflicts import prepared_insert_or_skip
from service.store.models import InboxRecord
from service.store.prepared import PreparedRead
from service.store.sqlite_driver import point_lookup

_inbox = InboxRecord.__table__
_REPLY_COLUMNS = (
    _inbox.c.id,
    _inbox.c.reply_id,
    _inbox.c.reply_type,
    _inbox.c.reply_data,
    _inbox.c.created_at,
    _inbox.c.request_hash,
)
# Built once (every write command runs these): a prebuilt statement skips construction and cache-key work.
_FIND_BY_ID = PreparedRead(point_lookup(select(*_REPLY_COLUMNS).where(_inbox.c.id == bindparam("envelope_id"))))
_FIND_BY_ID_OR_KEY = PreparedRead(
    point_lookup(
        select(*_REPLY_COLUMNS).where(
            or_(
                _inbox.c.id == bindparam("envelope_id"),
                (_inbox.c.action == bindparam("action")) & (_inbox.c.idempotency_key == bindparam("idempotency_key")),
            )
        )
    )
)


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply as committed: sent again byte for byte (but for routing) when its command comes back."""

    reply_id: str
    reply_type: str
    data_json: str
    time: datetime
    request_hash: str = ""
    envelope_id: str = ""


def request_hash(action: str, params: dict[str, Any]) -> str:
    """Canonical hash of what a command asks for, to tell a retry from a reused idempotency key."""
    canonical = json.dumps([action, params], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def find(conn: AsyncConnection, envelope_id: str, action: str, idempotency_key: str | None) -> StoredReply | None:
    """The stored reply for this envelope id, else for this (action, idempotency key)."""
    if idempotency_key is None:
        rows = await _FIND_BY_ID.all(conn, {"envelope_id": envelope_id})
    else:
        keys = {"envelope_id": envelope_id, "action": action, "idempotency_key": idempotency_key}
        rows = await _FIND_BY_ID_OR_KEY.all(conn, keys)
    if not rows:
        return None
    row = next((r for r in rows if r.id == envelope_id), rows[0])
    return StoredReply(row.reply_id, row.reply_type, row.reply_data, row.created_at, row.request_hash, row.id)


async def record(
    conn: AsyncConnection,
    *,
    envelope_id: str,
    action: str,
    idempotency_key: str | None,
    req_hash: str,
    reply: StoredReply,
) -> bool:
    """Store a finished reply in one statement; False when the command's id or key is already recorded."""
    inserted = await prepared_insert_or_skip(conn.dialect.name, _inbox).execute(
        conn,
        {
            "id": envelope_id,
            "action": action,
            "idempotency_key": idempotency_key,
            "request_hash": req_hash,
            "reply_id": reply.reply_id,
            "reply_type": reply.reply_type,
            "reply_data": reply.data_json,
            "created_at": reply.time,
        },
    )
    return inserted == 1


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(_inbox))).scalar_one())


async def purge_before(conn: AsyncConnection, cutoff: datetime, limit: int, *, dry_run: bool) -> int:
    """Delete (or count) up to ``limit`` records older than ``cutoff``; returns how many."""
    ids = select(_inbox.c.id).where(_inbox.c.created_at < cutoff).limit(limit)
    if dry_run:
        return int((await conn.execute(select(func.count()).select_from(ids.subquery()))).scalar_one())
    result = await conn.execute(delete(_inbox).where(_inbox.c.id.in_(ids)))
    return int(result.rowcount or 0)
