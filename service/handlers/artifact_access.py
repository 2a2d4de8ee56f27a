"""Who may see one artifact row: the checks every artifact read shares (get, latest, uri, lineage, register).

An artifact is shown only while it is live (not deleted, not past its retention) and readable by the
requester; what a refusal says depends on whether the requester could read it, so a stranger learns nothing
an unknown id would not tell.
"""

from __future__ import annotations

from datetime import datetime

from contracts import NotFound
from service.core.context import HandlerContext
from service.identity import Requester, can_read, refuse_read
from service.store.types import AnyRow


def readable(row: AnyRow, requester: Requester) -> bool:
    return can_read(row.visibility, row.owner, row.trace_id, requester)


def expired(row: AnyRow, now: datetime) -> bool:
    return row.expires_at is not None and row.expires_at <= now


def live_row(row: AnyRow | None, artifact_id: str, ctx: HandlerContext, *, allow_deleted: bool = False) -> AnyRow:
    """NOT_FOUND for an unknown artifact, a deleted one (a tombstone) and one past its retention, gone at once
    for every read even before cleanup removes its row; only a requester who could read it learns why
    (``details.reason``: ``deleted`` or ``expired``), anyone else gets the answer an unknown id gets."""
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found", {"artifact_id": artifact_id})
    deleted, past = row.deleted_at is not None, expired(row, ctx.now)
    if not (deleted or past):
        return row
    can = readable(row, ctx.requester)
    if allow_deleted and can and not past:
        return row  # ``latest`` walks on from a deleted start
    details = {"artifact_id": artifact_id}
    if can:
        details["reason"] = "deleted" if deleted else "expired"
    raise NotFound(f"artifact {artifact_id} not found", details)


def check_readable(row: AnyRow, ctx: HandlerContext) -> None:
    if not readable(row, ctx.requester):
        raise refuse_read("artifact", row.id, row.visibility, ctx.requester)


def shown(row: AnyRow, ctx: HandlerContext) -> bool:
    """Live and readable: what a listing or a walk may show of it."""
    return row.deleted_at is None and not expired(row, ctx.now) and readable(row, ctx.requester)
