"""Queries of the scrubber (the ``verify_checksums`` cleanup scope): its queue and what it records.

The queue is ``ix_artifacts_verify_queue`` (revision 0013), ``(verified_at, registered_at, id)`` over completed
rows: the never-verified ones first, in registration order, then the longest unverified. Every statement
spells the index's predicate as a literal (``_COMPLETED``) so both planners can use it.
Tombstones (``deleted_at`` set) are never verified: their file already lies in orphans/.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ArtifactFailure, ArtifactStatus
from service.store.models import Artifact
from service.store.types import AnyRow

artifacts = Artifact.__table__

_COMPLETED: dict[str, ColumnElement[bool]] = {
    "postgresql": text("artifacts.status = 'completed'"),  # type: ignore[dict-item]
    "sqlite": text("likely(artifacts.status = 'completed')"),  # type: ignore[dict-item]
}
"""The queue index's own predicate, as a literal (a bound ``'completed'`` would not prove it to a generic plan).
SQLite, without statistics, would rather take the equality into ``(status, created_at, id)`` and sort; ``likely``
says what is true (nearly every row is completed), and it walks the queue index in order instead."""
_COLUMNS = (
    artifacts.c.id,
    artifacts.c.uri,
    artifacts.c.checksum,
    artifacts.c.size_bytes,
    artifacts.c.registered_at,
    artifacts.c.verified_at,
)


def _verifiable(conn: AsyncConnection) -> ColumnElement[bool]:
    return and_(_COMPLETED[conn.dialect.name], artifacts.c.deleted_at.is_(None))


async def queue(conn: AsyncConnection, limit: int) -> list[AnyRow]:
    """Up to ``limit`` completed artifacts to verify next: never verified first (oldest registration first),
    then the oldest ``verified_at``. Two range scans of the queue index, each as long as the batch."""
    rows = list((await conn.execute(never_verified(conn, limit))).all())
    if len(rows) < limit:
        rows += (await conn.execute(oldest_verified(conn, limit - len(rows)))).all()
    return rows


def never_verified(conn: AsyncConnection, limit: int) -> Select[Any]:
    """The head of the queue: ``verified_at IS NULL``, oldest registration first."""
    return (
        select(*_COLUMNS)
        .where(_verifiable(conn), artifacts.c.verified_at.is_(None))
        .order_by(artifacts.c.registered_at, artifacts.c.id)
        .limit(limit)
    )


def oldest_verified(conn: AsyncConnection, limit: int) -> Select[Any]:
    """The rest of the queue: verified before, the longest ago first."""
    return (
        select(*_COLUMNS)
        .where(_verifiable(conn), artifacts.c.verified_at.is_not(None))
        .order_by(artifacts.c.verified_at, artifacts.c.registered_at, artifacts.c.id)
        .limit(limit)
    )


async def every_page(conn: AsyncConnection, after: tuple[datetime, str] | None, limit: int) -> list[AnyRow]:
    """The next ``limit`` artifacts in registration order (a keyset walk of ``(registered_at, id)``), for a
    pass over every completed file (``storage-worker verify --all``). Callers keep the completed, live ones:
    a status condition here would make the planner sort (see ``maintenance.artifacts_page``)."""
    query = select(*_COLUMNS, artifacts.c.status, artifacts.c.deleted_at)
    if after is not None:
        after_time, after_id = after
        query = query.where(
            (artifacts.c.registered_at > after_time)
            | ((artifacts.c.registered_at == after_time) & (artifacts.c.id > after_id))
        )
    query = query.order_by(artifacts.c.registered_at, artifacts.c.id).limit(limit)
    return list((await conn.execute(query)).all())


def verifiable(row: AnyRow) -> bool:
    """A row of ``every_page`` the scrubber checks: completed and not a tombstone."""
    return bool(row.status == ArtifactStatus.COMPLETED.value and row.deleted_at is None)


async def totals(conn: AsyncConnection) -> tuple[int, int]:
    """How many completed, live artifacts there are and their bytes: the extent of a pass over all of them."""
    query = select(func.count(), func.coalesce(func.sum(artifacts.c.size_bytes), 0)).where(_verifiable(conn))
    files, size = (await conn.execute(query)).one()
    return int(files), int(size)


async def record_verified(conn: AsyncConnection, checked: Sequence[tuple[str, str]], now: datetime) -> int:
    """``verified_at = now`` on these ``(id, checksum)`` rows, if each is still completed, live, with that checksum."""
    if not checked:
        return 0
    wanted = set(checked)
    ids = [artifact_id for artifact_id, _ in wanted]
    current = await conn.execute(
        select(artifacts.c.id, artifacts.c.checksum).where(artifacts.c.id.in_(ids), _verifiable(conn))
    )
    still = [row.id for row in current if (row.id, row.checksum) in wanted]
    if not still:
        return 0
    result = await conn.execute(update(artifacts).where(artifacts.c.id.in_(still)).values(verified_at=now))
    return int(result.rowcount or 0)


async def mark_failed(conn: AsyncConnection, ids: Sequence[str], reason: ArtifactFailure) -> list[str]:
    """Completed, live artifacts among ``ids`` become failed with ``reason``; returns the ids that changed."""
    if not ids:
        return []
    still = select(artifacts.c.id).where(artifacts.c.id.in_(ids), _verifiable(conn))
    changed = list((await conn.execute(still)).scalars())
    if changed:
        await conn.execute(
            update(artifacts)
            .where(artifacts.c.id.in_(changed))
            .values(status=ArtifactStatus.FAILED.value, failure_reason=reason.value)
        )
    return changed
