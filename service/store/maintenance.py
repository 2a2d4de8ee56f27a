"""Queries that cleanup and startup recovery run over artifacts and the inbox, each bounded by a batch size."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Table, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import ArtifactStatus
from service.store import quotas
from service.store.models import Artifact, ArtifactLabel, InboxRecord
from service.store.types import AnyRow

artifacts = Artifact.__table__
artifact_labels = ArtifactLabel.__table__
inbox = InboxRecord.__table__

COMPLETED = ArtifactStatus.COMPLETED.value
UPLOADING = ArtifactStatus.UPLOADING.value
FAILED = ArtifactStatus.FAILED.value


async def _count(conn: AsyncConnection, table: Table, *conditions: ColumnElement[bool]) -> int:
    return int((await conn.execute(select(func.count()).select_from(table).where(*conditions))).scalar_one())


# -- expired artifacts -------------------------------------------------------------------------


async def count_expired_artifacts(conn: AsyncConnection, now: datetime) -> int:
    return await _count(conn, artifacts, artifacts.c.expires_at <= now)


async def delete_expired_artifacts(conn: AsyncConnection, now: datetime, batch: int) -> list[AnyRow]:
    """Remove up to ``batch`` artifacts whose retention ran out; returns their (id, uri) for the file moves.

    The live ones among them (not tombstones) leave their traces' usage in the same transaction.
    """
    rows = list(
        (
            await conn.execute(
                select(
                    artifacts.c.id,
                    artifacts.c.uri,
                    artifacts.c.trace_id,
                    artifacts.c.size_bytes,
                    artifacts.c.deleted_at,
                )
                .where(artifacts.c.expires_at <= now)
                .order_by(artifacts.c.expires_at)
                .limit(batch)
            )
        ).all()
    )
    if rows:
        await _remove_artifacts(conn, [row.id for row in rows])
        await quotas.release(conn, [(row.trace_id, row.size_bytes) for row in rows if row.deleted_at is None])
    return rows


async def _remove_artifacts(conn: AsyncConnection, ids: list[str]) -> None:
    """Remove the artifacts' rows, their labels first (their lineage rows go with them: ON DELETE CASCADE)."""
    await conn.execute(delete(artifact_labels).where(artifact_labels.c.artifact_id.in_(ids)))
    await conn.execute(delete(artifacts).where(artifacts.c.id.in_(ids)))


# -- tombstones -------------------------------------------------------------------------------


def _deleted_before(cutoff: datetime) -> ColumnElement[bool]:
    return artifacts.c.deleted_at.is_not(None) & (artifacts.c.deleted_at < cutoff)


async def count_tombstones_before(conn: AsyncConnection, cutoff: datetime) -> int:
    return await _count(conn, artifacts, _deleted_before(cutoff))


async def purge_tombstones(conn: AsyncConnection, cutoff: datetime, batch: int) -> list[AnyRow]:
    """Remove up to ``batch`` artifacts deleted before ``cutoff``, oldest first (the partial ``deleted_at``
    index); returns their (id, uri) for the file removals."""
    rows = list(
        (
            await conn.execute(
                select(artifacts.c.id, artifacts.c.uri)
                .where(_deleted_before(cutoff))
                .order_by(artifacts.c.deleted_at)
                .limit(batch)
            )
        ).all()
    )
    if rows:
        await _remove_artifacts(conn, [row.id for row in rows])
    return rows


async def tombstone_uris(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, str]:
    """The stored uri of each of these ids that is a tombstone: its file in orphans/ waits for a restore."""
    if not ids:
        return {}
    query = select(artifacts.c.id, artifacts.c.uri).where(artifacts.c.id.in_(ids), artifacts.c.deleted_at.is_not(None))
    return {row.id: row.uri for row in await conn.execute(query)}


# -- stale uploads and missing files -----------------------------------------------------------


def _stale_uploading(cutoff: datetime) -> ColumnElement[bool]:
    return (artifacts.c.status == UPLOADING) & (artifacts.c.registered_at < cutoff)


async def count_stale_uploading(conn: AsyncConnection, cutoff: datetime) -> int:
    return await _count(conn, artifacts, _stale_uploading(cutoff))


async def fail_stale_uploading(conn: AsyncConnection, cutoff: datetime, batch: int) -> list[str]:
    """Mark up to ``batch`` uploads registered before ``cutoff`` as failed; returns their ids."""
    ids = list((await conn.execute(select(artifacts.c.id).where(_stale_uploading(cutoff)).limit(batch))).scalars())
    if ids:
        await conn.execute(update(artifacts).where(artifacts.c.id.in_(ids)).values(status=FAILED))
    return ids


_FILE_CHECK_COLUMNS = (
    artifacts.c.id,
    artifacts.c.uri,
    artifacts.c.checksum,
    artifacts.c.size_bytes,
    artifacts.c.status,
    artifacts.c.registered_at,
    artifacts.c.deleted_at,
)
"""What a check of an artifact against its file reads (cleanup's walk and start-up recovery alike); a
tombstone's file lies in orphans/, and the checks leave it alone."""


async def artifacts_page(conn: AsyncConnection, *, after_id: str, limit: int) -> list[AnyRow]:
    """The next artifacts in primary-key order: a keyset walk that costs the same on every page.

    Callers filter status and times in Python: with a status condition in SQL, SQLite prefers the status
    index and sorts every page, which turns a walk of a big table quadratic.
    """
    query = select(*_FILE_CHECK_COLUMNS).where(artifacts.c.id > after_id).order_by(artifacts.c.id).limit(limit)
    return list((await conn.execute(query)).all())


async def recent_artifacts_page(
    conn: AsyncConnection, since: datetime, after: tuple[datetime, str] | None, limit: int
) -> list[AnyRow]:
    """Artifacts registered at or after ``since``, oldest first, keyset-paged on (registered_at, id).

    Startup recovery reads only the last registrations through the (registered_at, id) index, so a
    restart costs the same with a thousand artifacts as with a million.
    """
    query = select(*_FILE_CHECK_COLUMNS).where(artifacts.c.registered_at >= since)
    if after is not None:
        after_time, after_id = after
        query = query.where(
            (artifacts.c.registered_at > after_time)
            | ((artifacts.c.registered_at == after_time) & (artifacts.c.id > after_id))
        )
    query = query.order_by(artifacts.c.registered_at, artifacts.c.id).limit(limit)
    return list((await conn.execute(query)).all())


async def newest_registration(conn: AsyncConnection) -> datetime | None:
    value: datetime | None = (await conn.execute(select(func.max(artifacts.c.registered_at)))).scalar_one()
    return value


# -- files without rows ------------------------------------------------------------------------


async def uris_of(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, str]:
    """The stored uri of each of these artifact ids that exists."""
    if not ids:
        return {}
    rows = await conn.execute(select(artifacts.c.id, artifacts.c.uri).where(artifacts.c.id.in_(ids)))
    return {row.id: row.uri for row in rows}


async def referenced_uris(conn: AsyncConnection, uris: Sequence[str]) -> set[str]:
    """Which of these uris some artifact row points at (the slow path, for files not named by an id)."""
    if not uris:
        return set()
    return set((await conn.execute(select(artifacts.c.uri).where(artifacts.c.uri.in_(uris)))).scalars())


# -- inbox -------------------------------------------------------------------------------------


async def count_inbox_before(conn: AsyncConnection, cutoff: datetime) -> int:
    return await _count(conn, inbox, inbox.c.created_at < cutoff)


async def purge_inbox_before(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    doomed = select(inbox.c.requester, inbox.c.id).where(inbox.c.created_at < cutoff).limit(batch)
    keys = tuple_(inbox.c.requester, inbox.c.id)  # the primary key: ids alone repeat across requesters
    return int((await conn.execute(delete(inbox).where(keys.in_(doomed)))).rowcount or 0)
