"""The inbox: the stored reply of every executed write command, keyed by requester and envelope id or key.

The requester is part of every key: one agent's envelope ids and idempotency keys never find another's
record, so nobody can read someone else's stored reply, nor pre-empt their command by using its id first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ERROR_TYPE
from service.store.engine.deferred import DeferredInsert
from service.store.engine.prepared import PreparedRead
from service.store.engine.sqlite_driver import point_lookup
from service.store.models import InboxRecord

_inbox = InboxRecord.__table__
_REPLY_COLUMNS = (
    _inbox.c.id,
    _inbox.c.action,
    _inbox.c.reply_id,
    _inbox.c.reply_type,
    _inbox.c.reply_data,
    _inbox.c.created_at,
    _inbox.c.request_hash,
)
# Built once (every write command runs these): a prebuilt statement skips construction and cache-key work.
_OF_REQUESTER = _inbox.c.requester == bindparam("requester")
_FIND_BY_ID = PreparedRead.by_keys(_REPLY_COLUMNS, {"requester": _inbox.c.requester, "envelope_id": _inbox.c.id})
_FIND_BY_ID_OR_KEY = PreparedRead(
    point_lookup(
        select(*_REPLY_COLUMNS).where(
            _OF_REQUESTER,
            or_(
                _inbox.c.id == bindparam("envelope_id"),
                (_inbox.c.action == bindparam("action")) & (_inbox.c.idempotency_key == bindparam("idempotency_key")),
            ),
        )
    )
)
_RECORD = DeferredInsert(_inbox, list(_inbox.c), skip_conflicts=True)
"""On PostgreSQL sent with the group's other inbox rows at its end; a twin's row found there reruns the group."""
ANONYMOUS = ""
"""The inbox's requester for a command without an identity (the column is part of the primary key)."""


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply as committed: sent again byte for byte (but for routing) when its command comes back."""

    reply_id: str
    reply_type: str
    data_json: str
    time: datetime
    request_hash: str = ""
    envelope_id: str = ""
    action: str = ""
    code: str = "OK"
    """``OK`` for a result, else the error's code: read once where the reply is made or loaded."""

    @property
    def replayed(self) -> bool:
        """Read back from the inbox (only such a reply carries its command's envelope id)."""
        return bool(self.envelope_id)


def error_code_of(reply_type: str, data_json: str) -> str:
    """The outcome code of a stored reply's data: ``OK`` for a result, the error code for an error."""
    if reply_type != ERROR_TYPE:
        return "OK"
    try:
        return str(json.loads(data_json)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "INTERNAL"


def request_hash(action: str, params: dict[str, Any]) -> str:
    """Canonical hash of what a command asks for, to tell a retry from a reused idempotency key."""
    canonical = json.dumps([action, params], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def find(
    conn: AsyncConnection, requester: str, envelope_id: str, action: str, idempotency_key: str | None
) -> StoredReply | None:
    """This requester's stored reply for this envelope id, else for this (action, idempotency key)."""
    if idempotency_key is None:
        rows = await _FIND_BY_ID.all(conn, {"requester": requester, "envelope_id": envelope_id})
    else:
        keys = {
            "requester": requester,
            "envelope_id": envelope_id,
            "action": action,
            "idempotency_key": idempotency_key,
        }
        rows = await _FIND_BY_ID_OR_KEY.all(conn, keys)
    if not rows:
        return None
    row = next((r for r in rows if r.id == envelope_id), rows[0])
    code = error_code_of(row.reply_type, row.reply_data)
    return StoredReply(
        row.reply_id, row.reply_type, row.reply_data, row.created_at, row.request_hash, row.id, row.action, code
    )


async def record(
    conn: AsyncConnection,
    *,
    requester: str,
    envelope_id: str,
    action: str,
    idempotency_key: str | None,
    req_hash: str,
    reply: StoredReply,
) -> bool:
    """Store a finished reply in one statement; False when this requester's id or key is already recorded."""
    inserted = await _RECORD.insert(
        conn,
        [
            {
                "requester": requester,
                "id": envelope_id,
                "action": action,
                "idempotency_key": idempotency_key,
                "request_hash": req_hash,
                "reply_id": reply.reply_id,
                "reply_type": reply.reply_type,
                "reply_data": reply.data_json,
                "created_at": reply.time,
            }
        ],
    )
    return inserted == 1


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(_inbox))).scalar_one())
